"""The Gemini API routes (/v1beta/…, also under /gemini/v1beta/… as hajimi had them, and /v1/… for the
clients that ask for API version v1). Errors keep Gemini's shape here. Streams are passed on event by
event: with `alt=sse` as Gemini's own SSE, without it as one JSON array written as it grows (Gemini's
default `alt=json`). No keep-alive lines: Gemini clients parse every line of a stream."""
from __future__ import annotations

import asyncio
import re
from typing import Any

from ..errors import ApiError
from ..native import api_version, gemini_error, unauthorized
from ..request_context import ClientGone
from ..translate.sse import json_bytes
from .base import ApiHandler, LoggedHandler, safe_flush


class GeminiErrors:
    """Errors in Gemini's shape (for Gemini clients; `gemini_errors` says when)."""

    def gemini_errors(self) -> bool:
        return True

    def refusal(self) -> ApiError | None:
        refused = super().refusal()  # type: ignore[misc]
        if refused is not None and refused.status == 401 and self.gemini_errors():
            return unauthorized(api_version(self.request.path))  # type: ignore[attr-defined]
        return refused

    def write_api_error(self, err: ApiError) -> None:
        if not self.gemini_errors():
            return super().write_api_error(err)  # type: ignore[misc]
        self.note_error(err)  # type: ignore[attr-defined]
        self.clear()  # type: ignore[attr-defined]
        for k, v in err.headers.items():
            self.set_header(k, v)  # type: ignore[attr-defined]
        self.write_json(gemini_error(err), err.status)  # type: ignore[attr-defined]


def wants_gemini(handler: ApiHandler) -> bool:
    """A Gemini client at /v1/models (google-genai uses API version v1 by default): it sends its key in
    x-goog-api-key and names itself in x-goog-api-client; OpenAI clients send a Bearer token."""
    h = handler.request.headers
    return "x-goog-api-client" in h or ("x-goog-api-key" in h and "Authorization" not in h)


_OLD_JS_SDK = re.compile(r"google-genai-sdk/([0-9]+)\.\S* gl-node/")
LATE_ERROR_GAP = 0.25  # seconds at least between the last event and a bare JSON error (see `_late_error`)


def reads_bare_errors_only(handler: ApiHandler) -> bool:
    """google-genai for JavaScript before 3.0 (bundled in Gemini CLI 0.61 as 1.30): it names itself
    `google-genai-sdk/<version> gl-node/…` in x-goog-api-client, and reads an error inside a 200 stream only
    as a network read that parses whole as `{"error": …}` (3.0 reads `data:` events too)."""
    m = _OLD_JS_SDK.search(handler.request.headers.get("x-goog-api-client", ""))
    return m is not None and int(m.group(1)) < 3


class NativeModelsHandler(GeminiErrors, ApiHandler):
    async def get(self, name: str | None = None) -> None:
        await self.kl.catalog.ensure_loaded()
        self.write_models(name)

    def write_models(self, name: str | None) -> None:
        native = self.kl.native
        if name:
            self.write_json(native.model(name, api_version(self.request.path)))
            return
        models = native.models()
        try:
            size = max(1, min(1000, int(self.get_query_argument("pageSize", "1000"))))
            start = max(0, int(self.get_query_argument("pageToken", "0") or 0))
        except ValueError:
            raise ApiError(400, "pageSize and pageToken must be numbers") from None
        out: dict[str, Any] = {"models": models[start:start + size]}
        if start + size < len(models):
            out["nextPageToken"] = str(start + size)
        self.write_json(out)


class NativeCallHandler(GeminiErrors, LoggedHandler):
    async def post(self, model: str, method: str) -> None:
        req = self.json_body()
        if not isinstance(req, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        native = self.kl.native
        stream = method == "streamGenerateContent"
        ctx = self.begin(stream)
        trace = ctx.trace
        served = self.kl.chat.served(model)  # MODEL_ALIASES apply on every route
        if served != model:
            trace.asked, model = model, served
        await native.admit(model, method, self.client_ip, trace, api_version(self.request.path))
        try:
            if stream:
                await ctx.run(self._stream(model, trace))
            else:
                self.write_json(await ctx.run(native.call(model, method, self.raw_body, trace)))
        except ClientGone:
            return

    async def _stream(self, model: str, trace: Any) -> None:
        sse = self.get_query_argument("alt", "json") == "sse"
        events = self.kl.native.stream(model, self.raw_body, trace)
        first = await events.__anext__()  # an error before the first event keeps its HTTP status
        self.set_header("Content-Type", "text/event-stream" if sse else "application/json")
        self.set_header("X-Accel-Buffering", "no")
        self.write(b"data: " + json_bytes(first) + b"\r\n\r\n" if sse else b"[" + json_bytes(first))
        await safe_flush(self)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            async for event in events:
                self.write(b"data: " + json_bytes(event) + b"\r\n\r\n" if sse else b",\r\n" + json_bytes(event))
                await safe_flush(self)
                sent = loop.time()
        except ApiError as e:  # after the stream started: the error as this client reads one inside a 200
            self.note_error(e)
            bare = sse and reads_bare_errors_only(self)
            if bare and loop.time() - sent < LATE_ERROR_GAP:
                await asyncio.sleep(LATE_ERROR_GAP - (loop.time() - sent))
            self.write(self._late_error(e, sse, bare))
        finally:
            await events.aclose()
        if not sse:
            self.write(b"]")
        self.finish()

    @staticmethod
    def _late_error(err: ApiError, sse: bool, bare: bool) -> bytes:
        """An error after the stream started, in the one form this client reads. One form only: a client that
        parses each network read as JSON fails on a read that holds two.

        - `alt=json`: one more element of the array, as Gemini sends it.
        - SSE: an event `data: {"error": …}`. @ai-sdk/google reads only `data:` events (a bare JSON line is lost
          on it); google-genai for Python and for JavaScript from 3.0, and LiteLLM's gemini provider, read it.
        - SSE to google-genai for JavaScript before 3.0 (`bare`; Gemini CLI): the error object alone, the form that
          SDK was written against (googleapis/js-genai#461), in a write of its own. It finds the error only when
          it arrives as a network read of its own; joined to an event it is "Incomplete JSON segment at the end".
          A client that has read the events before it always gets it alone; when the stream broke right after
          an event (the last event and the end came together), Keyloom first lets LATE_ERROR_GAP pass since
          that event went out, so that the client takes the event in a read before the error arrives (without
          the gap Gemini CLI garbled every such error in trials, with it none)."""
        body = json_bytes(gemini_error(err))
        if not sse:
            return b",\r\n" + body
        if bare:
            return body + b"\r\n"
        return b"data: " + body + b"\r\n\r\n"
