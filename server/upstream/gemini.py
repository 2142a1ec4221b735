"""The Gemini API over HTTP: list models, generate, stream. Returns replies or raises typed failures.

The key travels in the `x-goog-api-key` header, never in the URL, so no URL we
build or log can leak it. Request bodies arrive already encoded, so a retry with
another key re-sends the same bytes without encoding them again.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import quote

import ujson

from .. import __version__
from ..translate.sse import SSEDecoder
from .egress import Egress, Requester
from .failures import BadResponse, Unreachable, UpstreamFailure, UpstreamTimeout, classify_error
from .http import (
    ConnectFailed,
    ConnectionBroken,
    ForbiddenAddress,
    HttpClient,
    HttpError,
    HttpTimeout,
    Origin,
    ProxyFailed,
    ResponseTooLarge,
)

ERROR_BODY_LIMIT = 1024 * 1024
MAX_REPLY_BYTES = 64 * 1024 * 1024
API_VERSION = "v1beta"


def transport_failure(e: HttpError, name: str = "Gemini") -> UpstreamFailure:
    """A transport error as a typed failure; `name` is the upstream's, as the user knows it ("could not reach
    ollama", not "could not reach Gemini", when a local server is down). A proxy that failed (a time-out while
    connecting to it included) is Unreachable, not reached: the road is broken, the key is not to blame."""
    if isinstance(e, ProxyFailed):
        return Unreachable(f"could not reach {name}: {e}", reached=False)
    if isinstance(e, HttpTimeout):
        return UpstreamTimeout(f"{name} did not answer in time: {e}")
    if isinstance(e, (ConnectFailed, ForbiddenAddress)):
        return Unreachable(f"could not reach {name}: {e}", reached=False)
    if isinstance(e, ConnectionBroken):
        return Unreachable(f"lost the connection to {name}: {e}")
    if isinstance(e, ResponseTooLarge):
        return BadResponse(str(e))
    return Unreachable(str(e))


class GeminiClient:
    name = "Gemini"  # as errors name this upstream
    def __init__(self, http: HttpClient, base_url: str, *, timeout: float = 300.0,
                 stream_idle_timeout: float = 120.0, redact: Callable[[str], str] = lambda s: s,
                 egress: Egress | None = None):
        self.http = http
        self.egress = egress  # UPSTREAM_PROXIES: each key's calls through its own proxy (None: all through `http`)
        self.origin, prefix = Origin.parse(base_url)
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.redact = redact
        self._ua = f"keyloom/{__version__}"

    def _headers(self, key: str) -> tuple[tuple[str, str], ...]:
        return (("x-goog-api-key", key), ("Content-Type", "application/json"),
                ("Accept-Encoding", "identity"), ("User-Agent", self._ua))

    def _http(self, key: str) -> Requester:
        """The road this key's calls take: its proxy under UPSTREAM_PROXIES, else the one client."""
        return self.egress.route(self._fp(key)) if self.egress else self.http

    def _fp(self, key: str) -> str:
        """The key's fingerprint as the pool knows it (Vertex AI's service accounts have their own)."""
        assert self.egress is not None
        return self.egress.fingerprint(key)

    def _path(self, model: str, method: str, query: str = "") -> str:
        return f"{self.prefix}/{API_VERSION}/models/{quote(model, safe='-._')}:{method}{query}"

    def _failure(self, status: int, body: bytes) -> UpstreamFailure:
        return classify_error(status, body, self.redact)

    async def _target(self, key: str, model: str, method: str, query: str = ""
                      ) -> tuple[Origin, str, tuple[tuple[str, str], ...]]:
        """Where a model call goes and with which headers (Vertex AI overrides this)."""
        return self.origin, self._path(model, method, query), self._headers(key)

    async def _models_page(self, key: str, query: str) -> dict[str, Any]:
        try:
            resp = await self._http(key).request("GET", self.origin, f"{self.prefix}/{API_VERSION}/models{query}",
                                           headers=self._headers(key), timeout=self.timeout, limit=MAX_REPLY_BYTES)
        except HttpError as e:
            raise transport_failure(e, self.name) from None
        if resp.status != 200:
            raise self._failure(resp.status, resp.body)
        try:
            page = ujson.loads(resp.body)
        except ValueError:
            raise BadResponse("Gemini model list is not valid JSON", resp.status) from None
        if not isinstance(page, dict):
            raise BadResponse("Gemini model list is not a JSON object", resp.status)
        return page

    async def list_models(self, key: str, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every model, following nextPageToken through all pages."""
        models: list[dict[str, Any]] = []
        token = ""
        for _ in range(100):  # a bound, in case an upstream keeps handing out tokens
            query = f"?pageSize={page_size}" + (f"&pageToken={quote(token, safe='')}" if token else "")
            page = await self._models_page(key, query)
            models.extend(m for m in page.get("models") or () if isinstance(m, dict))
            token = page.get("nextPageToken") or ""
            if not token:
                break
        return models

    async def check_key(self, key: str) -> None:
        """Does Google accept this key? One small model-list page: costs no generation quota.
        Raises the typed failure when it does not."""
        await self._models_page(key, "?pageSize=1")

    async def generate(self, key: str, model: str, body: bytes) -> dict[str, Any]:
        return await self.post(key, model, "generateContent", body)

    async def post(self, key: str, model: str, method: str, body: bytes) -> dict[str, Any]:
        """POST models/{model}:{method} (generateContent, countTokens, embedContent, batchEmbedContents)
        → the JSON reply, or the typed failure."""
        origin, path, headers = await self._target(key, model, method)
        try:
            resp = await self._http(key).request("POST", origin, path, headers=headers, body=body, timeout=self.timeout,
                                           limit=MAX_REPLY_BYTES)
        except HttpError as e:
            raise transport_failure(e, self.name) from None
        if resp.status != 200:
            raise self._failure(resp.status, resp.body)
        return self._reply(resp.body, resp.status)

    def _reply(self, data: bytes | str, status: int = 200) -> dict[str, Any]:
        try:
            reply = ujson.loads(data)
        except ValueError:
            raise BadResponse("Gemini sent a reply that is not valid JSON", status) from None
        if isinstance(reply, list) and len(reply) == 1:
            reply = reply[0]
        if not isinstance(reply, dict):
            raise BadResponse("Gemini sent a reply that is not a JSON object", status)
        if isinstance(reply.get("error"), dict):
            code = reply["error"].get("code")
            raise self._failure(code if isinstance(code, int) and 400 <= code < 600 else 500,
                                ujson.dumps(reply).encode())
        return reply

    async def stream(self, key: str, model: str, body: bytes) -> AsyncGenerator[dict[str, Any], None]:
        """Each SSE event of `streamGenerateContent?alt=sse` as a reply dict, as it arrives."""
        origin, path, headers = await self._target(key, model, "streamGenerateContent", "?alt=sse")
        try:
            resp = await self._http(key).open("POST", origin, path, headers=headers, body=body, timeout=self.timeout)
        except HttpError as e:
            raise transport_failure(e, self.name) from None
        try:
            if resp.status != 200:
                try:
                    data = await resp.read(self.stream_idle_timeout, ERROR_BODY_LIMIT)
                except HttpError:
                    data = b""
                raise self._failure(resp.status, data)
            decoder = SSEDecoder()
            try:
                async for piece in resp.iter_body(self.stream_idle_timeout, MAX_REPLY_BYTES):
                    for payload in decoder.feed(piece):
                        yield self._reply(payload)
            except HttpError as e:
                raise transport_failure(e, self.name) from None
            except ValueError as e:  # an event over the size limit
                raise BadResponse(str(e)) from None
            rest, _ = decoder.close()
            for payload in rest:
                try:
                    yield self._reply(payload)
                except BadResponse:
                    raise BadResponse("Gemini's stream ended in the middle of an event") from None
        finally:
            resp.close()
