"""The Gemini API routes (/v1beta/…, also under /gemini/v1beta/… as hajimi had them). Errors keep
Gemini's shape here. Streams are passed on event by event: with `alt=sse` as Gemini's own SSE,
without it as one JSON array written as it grows (Gemini's default `alt=json`). No keep-alive lines:
Gemini clients parse every line of a stream."""
from __future__ import annotations

from typing import Any

from ..errors import ApiError
from ..native import gemini_error
from ..translate.sse import json_bytes
from .base import ApiHandler, ClientGone, LoggedHandler, safe_flush


class GeminiErrors:
    """Errors in Gemini's shape (for Gemini clients; `gemini_errors` says when)."""

    def gemini_errors(self) -> bool:
        return True

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


class NativeModelsHandler(GeminiErrors, ApiHandler):
    async def get(self, name: str | None = None) -> None:
        await self.kl.catalog.ensure_loaded()
        self.write_models(name)

    def write_models(self, name: str | None) -> None:
        native = self.kl.native
        if name:
            self.write_json(native.model(name))
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
        trace = self.begin(stream)
        await native.admit(model, method, self.client_ip, trace)
        try:
            if stream:
                await self.cancellable(self._stream(model, trace))
            else:
                self.write_json(await self.cancellable(native.call(model, method, self.raw_body, trace)))
        except ClientGone:
            return

    async def _stream(self, model: str, trace: Any) -> None:
        sse = self.get_query_argument("alt", "json") == "sse"
        events = self.kl.native.stream(model, self.raw_body, trace).__aiter__()
        first = await events.__anext__()  # an error before the first event keeps its HTTP status
        self.set_header("Content-Type", "text/event-stream" if sse else "application/json")
        self.set_header("X-Accel-Buffering", "no")
        self.write(b"data: " + json_bytes(first) + b"\r\n\r\n" if sse else b"[" + json_bytes(first))
        await safe_flush(self)
        try:
            async for event in events:
                self.write(b"data: " + json_bytes(event) + b"\r\n\r\n" if sse else b",\r\n" + json_bytes(event))
                await safe_flush(self)
        except ApiError as e:  # after the stream started: Gemini's raw JSON error chunk, which the SDKs read
            self.note_error(e)
            self.write((b"" if sse else b",\r\n") + json_bytes(gemini_error(e)) + (b"\r\n" if sse else b""))
        finally:
            await events.aclose()
        if not sse:
            self.write(b"]")
        self.finish()
