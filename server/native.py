"""The Gemini API itself, through the key pool: for Gemini-native clients (google-genai,
SillyTavern's "Google AI Studio" source with a reverse-proxy URL).

Bodies go upstream byte for byte (nothing dropped or rewritten); only the key is the pool's.
Generation and embedding calls are counted, cooled down and retried exactly as chat requests;
countTokens and the model list cost no quota and are not counted. Answers keep Gemini's own
shapes, errors too (see `gemini_error`).
"""
from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from .catalog import ModelCatalog, valid_model_id
from .dispatch import Dispatcher, Trace
from .errors import ApiError
from .limits import ClientLimits
from .pool.keys import Key
from .pool.policy import DispatchError, client_error, verdict
from .settings import Settings
from .upstream.failures import classify_reply

GENERATE = "generateContent"
STREAM = "streamGenerateContent"
COUNT = "countTokens"
EMBED = ("embedContent", "batchEmbedContents")
METHODS = (GENERATE, STREAM, COUNT, *EMBED)

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 405: "METHOD_NOT_ALLOWED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def gemini_error(err: ApiError) -> dict[str, Any]:
    """Our error in Gemini's shape: {"error": {"code", "message", "status"}}."""
    return {"error": {"code": err.status, "message": err.message,
                      "status": _STATUS_NAMES.get(err.status, "UNKNOWN")}}


def not_found(model: str) -> ApiError:
    return ApiError(404, f"models/{model} is not found for API version v1beta, or is not supported here.",
                    code="model_not_found")


class NativeService:
    def __init__(self, catalog: ModelCatalog, dispatcher: Dispatcher, limits: ClientLimits,
                 settings: Callable[[], Settings]):
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.limits = limits
        self.settings = settings

    # -- models ----------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        c = self.catalog
        entries = []
        for mid in c.chat_models() + c.embedding_models():
            entry = c.entry(mid)
            entries.append(entry if entry is not None else {
                "name": f"models/{mid}", "displayName": mid,
                "supportedGenerationMethods": ["generateContent", "countTokens"]})
        return entries

    def model(self, mid: str) -> dict[str, Any]:
        for m in self.models():
            if m.get("name") == f"models/{mid}":
                return m
        raise not_found(mid)

    # -- calls -----------------------------------------------------------------------------------

    async def admit(self, model: str, method: str, client_ip: str, trace: Trace) -> None:
        if method not in METHODS:
            raise ApiError(404, f"Unknown method {method[:64]}; Keyloom serves {', '.join(METHODS)}.",
                           code="not_found")
        if not valid_model_id(model):
            raise ApiError(400, "The model in the path is not a valid model id (letters, digits and ._-:/, at "
                                "most 128 characters).", code="invalid_model")
        trace.model = model
        known = await (self.catalog.knows_embedding(model) if method in EMBED else self.catalog.knows(model))
        if not known:
            raise not_found(model)
        if method != COUNT:
            refused = self.limits.admit(client_ip)
            if refused is not None:
                raise refused

    async def call(self, model: str, method: str, body: bytes, trace: Trace) -> dict[str, Any]:
        gemini = self.dispatcher.gemini
        try:
            if method == COUNT:
                return await self.dispatcher.free_call(lambda key: gemini.post(key.secret, model, COUNT, body),
                                                       model)

            async def once(key: Key) -> dict[str, Any]:
                reply = await gemini.post(key.secret, model, method, body)
                if method == GENERATE:
                    failure = classify_reply(reply)
                    if failure is not None and verdict(failure).retry:  # empty or filtered: another key
                        raise failure
                return reply

            if method in EMBED:
                return await self.dispatcher.call(model, once, trace, succeeded=lambda _: None)
            return await self.dispatcher.call(model, once, trace)
        except DispatchError as e:
            raise client_error(e) from None

    async def stream(self, model: str, body: bytes, trace: Trace) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in self.dispatcher.stream(model, body, trace):
                yield event
        except DispatchError as e:
            raise client_error(e) from None
