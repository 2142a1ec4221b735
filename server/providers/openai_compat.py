"""OpenAI-compatible upstreams (Ollama, llama.cpp, vLLM, other services): requests pass through with only
the model id rewritten, through the same key pool, limits, retries and request log as Gemini.

Failures are read from the upstream's status (and OpenAI-style error body) into the same typed
failures as Gemini's, so the one policy table decides: 401/403 take a key out of rotation, 429 cools
it down for the model (Retry-After honoured), 5xx and timeouts rest it briefly, other 4xx go back to
the client unchanged and are not retried.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import ujson

from ..pool.keys import Key
from ..redact import snippet
from ..upstream.failures import (
    BadResponse,
    InvalidKey,
    ModelNotFound,
    Overloaded,
    QuotaExceeded,
    RequestRejected,
    ServerError,
    UpstreamFailure,
)
from ..upstream.gemini import transport_failure
from ..upstream.http import HttpClient, HttpError, Origin, Response
from .config import OpenAIUpstream

log = logging.getLogger("keyloom.openai_compat")
ERROR_BODY_LIMIT = 1024 * 1024
MAX_REPLY_BYTES = 64 * 1024 * 1024


def _message(body: bytes, redact: Callable[[str], str]) -> str:
    """The upstream's error message; a body without one is quoted in part, masked before it is cut."""
    try:
        data = ujson.loads(body)
    except ValueError:
        return snippet(body, redact, 300)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code") or err)
    if isinstance(err, str):
        return err
    return snippet(str(data), redact, 300)


def classify(status: int, body: bytes, headers: dict[str, str], redact: Callable[[str], str],
             name: str) -> UpstreamFailure:
    message = redact(f"{name}: " + (_message(body, redact) or f"HTTP {status}"))
    if status in (401, 403):
        return InvalidKey(message, status)
    if status == 429:
        retry = headers.get("retry-after", "")
        seconds = float(retry) if retry.replace(".", "", 1).isdigit() else None
        return QuotaExceeded(message, status, per=None, retry_after=seconds)
    if status == 404:
        return ModelNotFound(message, status)
    if status == 503:
        return Overloaded(message, status)
    if status >= 500:
        return ServerError(message, status)
    return RequestRejected(message, status)


def keyless(name: str) -> Key:
    """The pool entry of an upstream without keys (a local server): it still gets counted and rested."""
    return Key("", fp=hashlib.sha256(f"keyless:{name}".encode()).hexdigest()[:12], masked="(no key)",
               source="providers", provider=name)


class OpenAICompatClient:
    def __init__(self, http: HttpClient, cfg: OpenAIUpstream, redact: Callable[[str], str]):
        self.http = http
        self.cfg = cfg
        self.redact = redact
        self.origin, prefix = Origin.parse(cfg.base_url)
        self.prefix = prefix.rstrip("/")
        self.name = cfg.name  # as errors name this upstream

    def keys(self) -> list[Key]:
        if not self.cfg.keys:
            return [keyless(self.cfg.name)]
        return [Key(k, source="providers", provider=self.cfg.name) for k in self.cfg.keys]

    def _headers(self, key: str, stream: bool = False) -> list[tuple[str, str]]:
        h = [("Content-Type", "application/json"), ("Accept", "text/event-stream" if stream else "application/json"),
             ("Accept-Encoding", "identity")]
        if key:
            h.append(("Authorization", f"Bearer {key}"))
        h.extend(self.cfg.headers)
        return h

    def _failure(self, resp: Response, body: bytes) -> UpstreamFailure:
        return classify(resp.status, body, {k.lower(): v for k, v in resp.headers.items()}, self.redact,
                        self.cfg.name)

    async def post(self, key: str, path: str, body: bytes) -> bytes:
        """POST {base}{path} → the 200 body, or the typed failure."""
        try:
            resp = await self.http.request("POST", self.origin, self.prefix + path, headers=self._headers(key),
                                           body=body, timeout=self.cfg.timeout, limit=MAX_REPLY_BYTES)
        except HttpError as e:
            raise transport_failure(e, self.cfg.name) from None
        if resp.status != 200:
            raise self._failure(resp, resp.body)
        return resp.body

    async def open(self, key: str, path: str, body: bytes) -> Response:
        """Start a streaming POST; returns once a 200 head arrived (else the typed failure)."""
        try:
            resp = await self.http.open("POST", self.origin, self.prefix + path, headers=self._headers(key, True),
                                        body=body, timeout=self.cfg.timeout)
        except HttpError as e:
            raise transport_failure(e, self.cfg.name) from None
        if resp.status != 200:
            try:
                data = await resp.read(self.cfg.timeout, ERROR_BODY_LIMIT)
            except HttpError:
                data = b""
            finally:
                resp.close()
            raise self._failure(resp, data)
        return resp

    async def events(self, resp: Response, idle: float) -> AsyncGenerator[bytes, None]:
        """The stream's bytes, cut at event boundaries only (so keep-alive lines never land inside an event)."""
        buf = b""
        try:
            async for piece in resp.iter_body(idle, MAX_REPLY_BYTES):
                buf += piece
                cut = max(buf.rfind(b"\n\n"), buf.rfind(b"\r\n\r\n"))
                if cut >= 0:
                    end = cut + (4 if buf[cut:cut + 4] == b"\r\n\r\n" else 2)
                    out, buf = buf[:end], buf[end:]
                    yield out
        except HttpError as e:
            raise transport_failure(e, self.cfg.name) from None
        finally:
            resp.close()
        if buf.strip():
            yield buf

    async def list_models(self, key: str) -> list[str]:
        try:
            resp = await self.http.request("GET", self.origin, self.prefix + "/models", headers=self._headers(key),
                                           timeout=min(self.cfg.timeout, 30.0), limit=MAX_REPLY_BYTES)
        except HttpError as e:
            raise transport_failure(e, self.cfg.name) from None
        if resp.status != 200:
            raise self._failure(resp, resp.body)
        try:
            data = ujson.loads(resp.body)
            return [str(m["id"]) for m in data["data"] if isinstance(m, dict) and m.get("id")]
        except (ValueError, KeyError, TypeError):
            raise BadResponse(f"{self.cfg.name}: its /models answer is not an OpenAI model list", 200) from None

    async def check_key(self, key: str) -> None:
        await self.list_models(key)


def usage_of(body: bytes) -> dict[str, Any] | None:
    """The reply's usage as Gemini-style usageMetadata (what the pool counts tokens from)."""
    try:
        u = ujson.loads(body).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    return {"usageMetadata": {"promptTokenCount": int(u.get("prompt_tokens") or 0),
                              "candidatesTokenCount": int(u.get("completion_tokens") or 0)}}
