"""Vertex AI: the Gemini models through Google Cloud, with service accounts or express-mode keys.

The request and reply bodies are Gemini's (the translation layer is shared; Keyloom always gives
every content its role, which Vertex requires), so `VertexClient` is a `GeminiClient` that only
changes where a call goes and how it authenticates:

- a service account: `https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/
  {location}/publishers/google/models/{model}:{method}` (`global`: the host without a region prefix),
  with an OAuth access token that google-auth obtains by signing a JWT with the account's key;
- an express-mode key: `https://aiplatform.googleapis.com/v1/publishers/google/models/{model}:{method}`
  with the key in `x-goog-api-key`.

Tokens are refreshed in a worker thread (google-auth's refresh is blocking), five minutes before
they expire, once per account however many requests ask at the same time; a 401 forces one refresh
and one retry. The refresh's HTTP call goes through Keyloom's own client on the event loop, so it takes
the road every upstream call takes (UPSTREAM_PROXY, the same TLS trust). In the key pool a service account
is a `Key` whose secret is an opaque handle, never the private key.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import quote

import google.auth.exceptions
import google.auth.transport
from google.oauth2 import service_account

from ..clock import Clock
from ..pool.keys import Key
from ..upstream.egress import Egress, Requester
from ..upstream.failures import InvalidKey, Unreachable, UpstreamFailure, UpstreamTimeout
from ..upstream.gemini import GeminiClient
from ..upstream.http import HttpClient, HttpError, HttpTimeout, Origin
from .config import VertexConfig

log = logging.getLogger("keyloom.vertex")

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REFRESH_MARGIN = 300.0  # seconds before expiry when a token is renewed
GLOBAL_HOST = "https://aiplatform.googleapis.com"
HANDLE = "vertex-sa:"
TOKEN_TIMEOUT = 30.0  # seconds for one call to the token endpoint
TOKEN_REPLY_LIMIT = 1024 * 1024


class _Response(google.auth.transport.Response):
    def __init__(self, status: int, headers: dict[str, str], data: bytes):
        self._status, self._headers, self._data = status, headers, data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class _TransportFailed(google.auth.exceptions.TransportError):
    """The token endpoint could not be reached: the HttpClient's error, kept to tell it from a refusal."""

    def __init__(self, error: HttpError):
        super().__init__(str(error))
        self.error = error


class HttpClientRequest(google.auth.transport.Request):
    """google-auth's transport interface over Keyloom's HttpClient, whose proxy (with its credentials, an
    https:// one too), TLS context and connection pool every other upstream call uses. google-auth calls it
    from a worker thread (its refresh is blocking); the request runs on the event loop while the thread waits."""

    def __init__(self, http: Requester, loop: asyncio.AbstractEventLoop):
        self.http, self.loop = http, loop

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float | None = None, **kwargs: Any) -> _Response:
        if _running_loop() is self.loop:  # waiting below would block the very loop that must do the work
            raise RuntimeError("HttpClientRequest is called from a worker thread, never on its event loop")
        try:
            origin, target = Origin.parse(url)
        except ValueError as e:
            raise google.auth.exceptions.TransportError(f"the token URL cannot be used: {e}") from None
        timeout = float(timeout or TOKEN_TIMEOUT)
        call = self.http.request(method, origin, target, headers=tuple((headers or {}).items()), body=body or b"",
                                 timeout=timeout, limit=TOKEN_REPLY_LIMIT)
        future = asyncio.run_coroutine_threadsafe(call, self.loop)
        try:
            resp = future.result(timeout + 5)  # bounded by the request's own timeout; this only guards a stopped loop
        except HttpError as e:
            raise _TransportFailed(e) from None
        except TimeoutError:
            future.cancel()
            raise _TransportFailed(HttpTimeout(f"no answer from {origin.host} within {timeout:g}s")) from None
        return _Response(resp.status, resp.headers, resp.body)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass(eq=False)
class ServiceAccount:
    info: dict[str, Any] = field(repr=False)
    fp: str = ""
    email: str = ""
    project: str = ""
    credentials: Any = field(default=None, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    refreshes: int = 0

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ServiceAccount:
        """Raises ValueError when the key cannot be used (message names the field, never its value)."""
        try:
            creds = service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
        except Exception as e:  # google-auth raises ValueError or a crypto error on a bad key
            raise ValueError(f"private_key cannot be read ({type(e).__name__})") from None
        fp = hashlib.sha256(("sa:" + info["client_email"] + info["private_key_id"]).encode()).hexdigest()[:12]
        return cls(info, fp, info["client_email"], info["project_id"], creds)

    @property
    def handle(self) -> str:
        return HANDLE + self.fp

    def key(self) -> Key:
        name, _, domain = self.email.partition("@")
        return Key(self.handle, fp=self.fp, masked=f"{name[:12]}…@{domain.split('.')[0]}", source="environment",
                   provider="vertex")


class VertexClient(GeminiClient):
    name = "Vertex AI"

    def __init__(self, http: HttpClient, config: VertexConfig, clock: Clock, *, timeout: float = 300.0,
                 stream_idle_timeout: float = 120.0, redact: Callable[[str], str] = lambda s: s,
                 request: google.auth.transport.Request | None = None, egress: Egress | None = None):
        super().__init__(http, GLOBAL_HOST, timeout=timeout, stream_idle_timeout=stream_idle_timeout, redact=redact,
                         egress=egress)
        self.config = config
        self.clock = clock
        self.accounts: dict[str, ServiceAccount] = {}
        self.request = request  # None: HttpClientRequest over `http`, on the loop the refresh is awaited from
        loc = config.location
        self.sa_origin, prefix = Origin.parse(config.base_url or (
            GLOBAL_HOST if loc == "global" else f"https://{loc}-aiplatform.googleapis.com"))
        self.sa_prefix = prefix.rstrip("/")
        self.express_origin, prefix = Origin.parse(config.base_url or GLOBAL_HOST)
        self.express_prefix = prefix.rstrip("/")
        for info in config.credentials:
            sa = ServiceAccount.from_info(info)
            self.accounts[sa.handle] = sa

    def keys(self) -> list[Key]:
        """The pooled credentials: service accounts and express keys."""
        out = [sa.key() for sa in self.accounts.values()]
        out += [Key(k, source="environment", provider="vertex") for k in self.config.express_keys]
        return out

    # -- tokens ----------------------------------------------------------------------------------

    def _fresh(self, sa: ServiceAccount) -> bool:
        c = sa.credentials
        if not c.token or c.expiry is None:
            return False
        return c.expiry.replace(tzinfo=UTC).timestamp() - self.clock.time() > REFRESH_MARGIN

    async def token(self, sa: ServiceAccount, force: bool = False) -> str:
        """A valid access token; concurrent callers share one refresh."""
        stale = sa.credentials.token if force else None
        if not force and self._fresh(sa):
            return sa.credentials.token
        async with sa.lock:
            if self._fresh(sa) and sa.credentials.token != stale:
                return sa.credentials.token  # someone else refreshed while we waited
            loop = asyncio.get_running_loop()
            # the account's token is fetched through the proxy its calls take (UPSTREAM_PROXIES)
            request = self.request if self.request is not None else HttpClientRequest(self._http(sa.handle), loop)
            try:
                await loop.run_in_executor(None, sa.credentials.refresh, request)
            except _TransportFailed as e:  # not a verdict on the account: the road to Google is broken
                message = self.redact(f"could not refresh the token of {sa.email}: {e.error}")
                if isinstance(e.error, HttpTimeout):
                    raise UpstreamTimeout(message) from None
                raise Unreachable(message, reached=False) from None
            except Exception as e:  # google.auth.exceptions.RefreshError / TransportError
                raise InvalidKey(self.redact(f"Vertex AI refused the service account {sa.email}: "
                                             f"{type(e).__name__}: {e}"), 401) from None
            sa.refreshes += 1
            return sa.credentials.token

    # -- where calls go --------------------------------------------------------------------------

    def _fp(self, key: str) -> str:
        sa = self.accounts.get(key)
        return sa.fp if sa is not None else super()._fp(key)

    async def _target(self, key: str, model: str, method: str, query: str = ""
                      ) -> tuple[Origin, str, tuple[tuple[str, str], ...]]:
        m = quote(model, safe="-._")
        sa = self.accounts.get(key)
        common = (("Content-Type", "application/json"), ("Accept-Encoding", "identity"), ("User-Agent", self._ua))
        if sa is None:  # express mode
            path = f"{self.express_prefix}/v1/publishers/google/models/{m}:{method}{query}"
            return self.express_origin, path, (("x-goog-api-key", key), *common)
        project = self.config.project or sa.project
        loc = self.config.location
        path = f"{self.sa_prefix}/v1/projects/{project}/locations/{loc}/publishers/google/models/{m}:{method}{query}"
        return self.sa_origin, path, (("Authorization", f"Bearer {await self.token(sa)}"), *common)

    async def _retry_unauthorized(self, key: str, call: Callable[[], Any]) -> Any:
        try:
            return await call()
        except UpstreamFailure as f:
            sa = self.accounts.get(key)
            if sa is None or f.status != 401:
                raise
            await self.token(sa, force=True)  # the token was revoked or expired early: once more, fresh
            return await call()

    async def post(self, key: str, model: str, method: str, body: bytes) -> dict[str, Any]:
        return await self._retry_unauthorized(key, lambda: GeminiClient.post(self, key, model, method, body))

    async def stream(self, key: str, model: str, body: bytes):
        sa = self.accounts.get(key)
        try:
            async for event in GeminiClient.stream(self, key, model, body):
                yield event
            return
        except UpstreamFailure as f:
            if sa is None or f.status != 401:
                raise
        await self.token(sa, force=True)
        async for event in GeminiClient.stream(self, key, model, body):
            yield event

    async def list_models(self, key: str, page_size: int = 1000) -> list[dict[str, Any]]:
        return [{"name": f"models/{m}", "supportedGenerationMethods": ["generateContent", "countTokens"]}
                for m in self.config.models]

    async def check_key(self, key: str) -> None:
        sa = self.accounts.get(key)
        if sa is not None:
            await self.token(sa, force=True)
            return
        body = b'{"contents": [{"role": "user", "parts": [{"text": "ping"}]}]}'
        await self.post(key, self.config.models[0], "countTokens", body)


def masked_secrets(config: VertexConfig) -> list[str]:
    """What the redactor must hide: private keys and their ids, express keys."""
    out: list[str] = list(config.express_keys)
    for c in config.credentials:
        out += [c.get("private_key", ""), c.get("private_key_id", "")]
        out += [line for line in str(c.get("private_key", "")).splitlines() if len(line) > 20]
    return [s for s in out if s]

