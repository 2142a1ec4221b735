"""Images and speech through the pool: `/v1/images/generations`, `/v1/images/edits`, `/v1/audio/speech`.

Every call is a pool call like a chat request's: the client's limits first, then the dispatcher (rotation,
counting per key and model, cool-downs, retries of empty or failed replies), the request log through the
trace. What is particular lives in the pure translators (server/translate/images_api.py, speech_api.py);
this service only picks the upstream method (generateContent, or Imagen's `:predict`) and fans an `n` of
Gemini image calls out in parallel (Gemini draws one image per call).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import ujson

from .aliases import served_model
from .catalog import ModelCatalog, model_id, valid_model_id
from .clock import Clock
from .dispatch import Dispatcher, Trace
from .errors import ApiError, bad_request, model_not_found
from .limits import ClientLimits
from .pool.keys import Key
from .pool.policy import DispatchError, client_error
from .settings import Settings
from .translate import images_api as img
from .translate import speech_api as tts
from .translate.gemini_body import TranslationError
from .translate.gemini_facts import is_imagen
from .upstream.failures import BadResponse


def _encode(body: dict[str, Any]) -> bytes:
    return ujson.dumps(body, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8")


class MediaService:
    def __init__(self, catalog: ModelCatalog, dispatcher: Dispatcher, limits: ClientLimits,
                 settings: Callable[[], Settings], clock: Clock):
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.limits = limits
        self.settings = settings
        self.clock = clock

    async def _model(self, req: Any, trace: Trace, imagen_ok: bool) -> str:
        if not isinstance(req, dict):
            raise bad_request("the request body must be a JSON object")
        asked = req.get("model")
        if not isinstance(asked, str) or not asked.strip():
            raise bad_request("model is required (a Gemini image or speech model, such as gemini-2.5-flash-image "
                              "or gemini-2.5-flash-preview-tts)", "model")
        asked = model_id(asked.strip())
        if not valid_model_id(asked):
            raise bad_request("model is not a valid model id", "model")
        model = served_model(asked, self.settings().MODEL_ALIASES) or asked
        if model != asked:
            trace.asked = asked
        trace.model = model
        known = await (self.catalog.knows_predict(model) if imagen_ok and is_imagen(model)
                       else self.catalog.knows(model))
        if not known:
            raise model_not_found(asked)
        return model

    def _admit(self, client_ip: str, trace: Trace) -> None:
        refused = self.limits.admit(client_ip, trace)
        if refused is not None:
            raise refused

    # -- images ------------------------------------------------------------------------------------

    async def images(self, req: Any, client_ip: str, trace: Trace,
                     inputs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        """An ImagesResponse: generated from the prompt, or (with `inputs`, as (mime, base64)) edited."""
        model = await self._model(req, trace, imagen_ok=not inputs)
        try:
            n, fmt = img.count(req), img.response_format(req)
            if is_imagen(model):
                body = _encode(img.imagen_request(req))
            else:
                body = _encode(img.gemini_request(req, model, inputs))
        except TranslationError as e:
            raise bad_request(e.message, e.param) from None
        self._admit(client_ip, trace)
        try:
            if is_imagen(model):
                images, said = await self._imagen(model, body, trace), ""
            else:
                images, said = await self._gemini_images(model, body, n, trace)
        except DispatchError as e:
            raise client_error(e) from None
        if not images:
            raise ApiError(502, f"{model} drew no image for this prompt" + (f"; it said: {said[:500]}" if said
                                                                            else "."),
                           type="server_error", code="no_image")
        usage = {"input_tokens": trace.prompt_tokens, "output_tokens": trace.completion_tokens,
                 "total_tokens": trace.prompt_tokens + trace.completion_tokens,
                 "input_tokens_details": {"text_tokens": trace.prompt_tokens, "image_tokens": 0}}
        return img.images_response(images, created=int(self.clock.time()), fmt=fmt, revised_prompt=said,
                                   usage=usage if trace.prompt_tokens else None)

    async def _gemini_images(self, model: str, body: bytes, n: int, trace: Trace
                             ) -> tuple[list[tuple[str, str]], str]:
        traces = [Trace(model=model) for _ in range(n)]
        try:
            replies = await asyncio.gather(*(self.dispatcher.generate(model, body, t) for t in traces))
        finally:
            trace.attempts = sum(t.attempts for t in traces)
            trace.key_fp = next((t.key_fp for t in traces if t.key_fp), None)
            trace.prompt_tokens = sum(t.prompt_tokens for t in traces)
            trace.completion_tokens = sum(t.completion_tokens for t in traces)
        images: list[tuple[str, str]] = []
        said = []
        for reply in replies:
            drawn, text = img.gemini_images(reply)
            images += drawn
            if text:
                said.append(text)
        return images, " ".join(said)

    async def _imagen(self, model: str, body: bytes, trace: Trace) -> list[tuple[str, str]]:
        async def once(key: Key) -> list[tuple[str, str]]:
            reply = await self.dispatcher.gemini.post(key.secret, model, "predict", body)
            drawn = img.imagen_images(reply)
            if not drawn:  # every image filtered (Imagen says so only by leaving it out): another key won't help
                raise BadResponse("Imagen returned no image (its safety filter may have removed them)", 200)
            return drawn

        return await self.dispatcher.call(model, once, trace, succeeded=lambda _: None)

    # -- speech ------------------------------------------------------------------------------------

    async def speech(self, req: Any, client_ip: str, trace: Trace) -> tuple[bytes, str]:
        """(audio bytes, content type) for /v1/audio/speech."""
        model = await self._model(req, trace, imagen_ok=False)
        try:
            fmt = tts.audio_format(req)
            body = _encode(tts.speech_request(req))
        except TranslationError as e:
            raise bad_request(e.message, e.param) from None
        self._admit(client_ip, trace)
        try:
            reply = await self.dispatcher.generate(model, body, trace)
        except DispatchError as e:
            raise client_error(e) from None
        found = tts.pcm_of(reply)
        if found is None:
            raise ApiError(502, f"{model} returned no audio (is it a speech model, such as "
                                "gemini-2.5-flash-preview-tts?)", type="server_error", code="no_audio")
        pcm, rate = found
        if fmt == "pcm":
            return pcm, f"audio/pcm;rate={rate}"
        return tts.wav_bytes(pcm, rate), "audio/wav"
