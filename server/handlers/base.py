"""What every handler shares: the application object, errors in the OpenAI shape, CORS,
authentication, bodies capped per route before they are read, and cancelling work when the
client hangs up."""
from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web
import ujson
from tornado import httputil
from tornado.iostream import StreamClosedError

from ..auth import presented_credentials
from ..errors import ApiError, storage_error, too_many_connections, unauthorized
from ..limits import client_key
from ..metrics import observe_request
from ..redact import snippet
from ..request_context import ClientGone, RequestContext
from ..store.errors import StoreDown
from ..store.redis_backend import StoreUnavailable
from ..store.requestlog import RequestRow
from ..translate.sse import json_bytes

if TYPE_CHECKING:
    from ..app import Keyloom

log = logging.getLogger("keyloom.http")
T = TypeVar("T")

_STATUS_TEXT = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                405: "Method not allowed", 413: "Request body too large", 429: "Too many requests"}


class _HttpDate:
    """The Date header, formatted once per second rather than once per response."""

    second = -1
    text = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.text = second, httputil.format_timestamp(second)
        return cls.text


CLIENT_CLOSED = 499  # the request log's status for a request whose client hung up first (nginx's code for it)
SMALL_BODY = 16 * 1024          # what a route without a body of its own accepts (pages, sign-in, unknown paths)
UNAUTHENTICATED_DRAIN = 1024 * 1024  # a refused caller's body up to this size is read and dropped, not held
DRAIN_SLACK = 1024 * 1024


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Every route streams its request body through here, so every route caps it before reading it.

    Tornado reads a plain handler's whole body (up to the server's limit) before the handler runs, so a
    stranger could make Keyloom hold megabytes on any path. Here `prepare` runs once the head has arrived:
    it decides whether the request is refused (`refusal`: credentials, content type, CSRF…), then allows the
    body `max_body()` bytes when it is not. A refused request's body, when it is small enough, is read and
    dropped before the refusal is sent (an answer written before Tornado has read the whole request makes it
    close the connection, and the client may then see a reset instead of the answer); a larger one is
    answered at once and the connection closes. Either way nothing a stranger sends is held.
    """

    ctx: RequestContext | None = None  # made by the handlers that do upstream work (LoggedHandler.begin)
    _counted = False
    _slot: str | None = None
    _refusal: ApiError | None = None
    _client: str | None = None
    error_message: str | None = None   # what the client was told, when it was an error
    error_status: int | None = None    # that error's status (also when it travelled inside a 200 stream)

    @property
    def kl(self) -> Keyloom:
        """The application object (set on the Tornado application; available even before initialize)."""
        return self.application.keyloom  # type: ignore[attr-defined]

    @property
    def client_ip(self) -> str:
        """The client's address (behind trusted proxies, the forwarded one)."""
        if self._client is None:
            self._client = self.kl.addresses.of(self.request)
        return self._client

    @property
    def client(self) -> str:
        """The client as throttles and caps count it (an IPv6 /64 as one)."""
        return client_key(self.client_ip)

    def browser_https(self) -> bool:
        """Whether the browser reached us over HTTPS (so cookies get `Secure`); only a trusted proxy may say."""
        proto = self.request.protocol
        if self.kl.proxy_hops > 0:
            proto = self.request.headers.get("X-Forwarded-Proto", proto)
        return proto.split(",")[0].strip().lower() == "https"

    def clear(self) -> None:
        # Tornado's clear(), minus a Server header we would only delete and a Date formatted per response.
        self._headers = httputil.HTTPHeaders({"Content-Type": "application/json", "Date": _HttpDate.now()})
        self.set_default_headers()
        self._write_buffer = []
        self._status_code = 200
        self._reason = "OK"

    def set_default_headers(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin:
            allowed = self.kl.settings.ALLOWED_ORIGINS
            if "*" in allowed:
                self.set_header("Access-Control-Allow-Origin", "*")
            elif origin in allowed:
                self.set_header("Access-Control-Allow-Origin", origin)
                self.set_header("Vary", "Origin")

    async def options(self, *args: Any) -> None:
        """CORS preflight."""
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers",
                        self.request.headers.get("Access-Control-Request-Headers",
                                                 "Authorization, Content-Type, x-goog-api-key, x-api-key, "
                                                                 "anthropic-version, anthropic-beta"))
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json_bytes(obj))

    def note_error(self, err: ApiError) -> None:
        """Remember the error for the request log, masked; the client gets the masked text too (a message may
        repeat what a client or an upstream sent)."""
        err.message = self.error_message = self.kl.redactor(err.message)
        self.error_status = err.status

    def logical_status(self) -> int:
        return self.error_status or self.get_status()

    def shape_error(self, err: ApiError) -> tuple[int, dict[str, Any]]:
        """(status, body) of an error in the shape of the API this route speaks: OpenAI's here."""
        return err.status, err.body()

    def write_api_error(self, err: ApiError) -> None:
        self.note_error(err)
        self.clear()  # drops headers set so far and re-applies the default (CORS) ones
        for k, v in err.headers.items():
            self.set_header(k, v)
        status, body = self.shape_error(err)
        self.error_status = status
        self.write_json(body, status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self.write_api_error(exc)
            return
        if isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            message = _STATUS_TEXT.get(status_code, self._reason)
            if status_code == 405:
                message = f"{self.request.method} is not allowed on {self.request.path}"
            self.write_api_error(ApiError(status_code, message))
            return
        if isinstance(exc, sqlite3.Error):
            self.write_api_error(storage_error(exc, self.kl.data_dir))
            return
        if isinstance(exc, StoreDown):  # Redis is away (it said so once); requests are still served
            self.write_api_error(StoreUnavailable("this"))
            return
        self.write_api_error(ApiError(500, "Keyloom hit an internal error while handling this request.",
                                      type="server_error", code="internal_error"))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ApiError, ClientGone)):
            return
        if isinstance(value, tornado.web.HTTPError) and value.status_code < 500:
            return
        if isinstance(value, sqlite3.Error):
            log.error("the database refused a write on %s %s: %s", self.request.method, self.request.path, value)
            return
        if isinstance(value, StoreDown):
            return  # the Redis backend said once that Redis is away
        log.error("unhandled error on %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ClientGone):
            return  # nothing to write to
        super()._handle_request_exception(e)

    # -- client disconnects --------------------------------------------------------------------

    def on_connection_close(self) -> None:
        if self.ctx is not None:
            self.ctx.hang_up()
        body = getattr(self.request, "_body_future", None)
        if body is not None and not body.done():
            self._release()  # closed while sending its body: the handler never runs, on_finish never comes

    @property
    def client_gone(self) -> bool:
        return self.ctx is not None and self.ctx.client_gone

    # -- admission: counting, authentication, the body ---------------------------------------------

    def refusal(self) -> ApiError | None:
        """Why this request is refused before its body is read (None: it is not). Public routes keep the
        default; the others check credentials here."""
        return None

    def max_body(self) -> int:
        """Bytes of body this route accepts from a request `refusal` let in."""
        return SMALL_BODY

    def prepare(self) -> None:
        kl = self.kl
        self._chunks: list[bytes] = []
        self._counted = True
        kl.in_flight += 1
        refused = None
        if kl.proxy_hops > 0:  # behind a trusted proxy every connection is the proxy's: count requests instead
            client = self.client
            if kl.slots.take(client):
                self._slot = client
            else:
                refused = too_many_connections()
        self._accept_body(refused or self.refusal())

    def _accept_body(self, refused: ApiError | None) -> None:
        length = self.request.headers.get("Content-Length")
        declared = None
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "Content-Length is not a number") from None
        connection = self.request.connection
        # An answer written here, before Tornado has read the whole request, makes it close the connection
        # afterwards: refusals are answered once the (small or empty) body is in, so keep-alive survives them.
        if refused is not None:
            if declared is None or declared <= UNAUTHENTICATED_DRAIN:
                self._refuse_after_body(refused)
                connection.set_max_body_size(UNAUTHENTICATED_DRAIN if declared is None else declared)  # type: ignore[union-attr]
                return
            raise refused  # a body not worth reading: answer now (the connection closes after)
        limit = self.max_body()
        if declared is not None and declared > limit:
            too_large = ApiError(413, f"The request body is {declared} bytes; the limit here is {limit} bytes"
                                      f"{' (MAX_REQUEST_BODY_MB)' if isinstance(self, ApiHandler) else ''}.",
                                 code="request_too_large")
            if declared > 2 * limit + DRAIN_SLACK:
                raise too_large  # not worth reading: answer now and let the connection close
            self._refuse_after_body(too_large)
            connection.set_max_body_size(declared)  # type: ignore[union-attr]
            return
        connection.set_max_body_size(limit)  # type: ignore[union-attr]

    def _refuse_after_body(self, err: ApiError) -> None:
        """Drop the body as it comes, then answer `err`: Tornado calls the route's method once the body is in,
        and that method is shadowed here, so no route can run for a refused caller by forgetting to check."""
        self._refusal = err
        setattr(self, (self.request.method or "").lower(), self._refuse)

    def _refuse(self, *args: Any) -> None:
        assert self._refusal is not None
        raise self._refusal

    def data_received(self, chunk: bytes) -> None:
        if self._refusal is None and not self._finished:
            self._chunks.append(chunk)

    def body_bytes(self) -> bytes:
        """The request body (whole: the route's method runs once it has arrived)."""
        if self._refusal is not None:
            raise self._refusal
        chunks = self._chunks
        if len(chunks) != 1:
            chunks[:] = [b"".join(chunks)]
        return chunks[0]

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.kl.in_flight -= 1
            if self._slot is not None:
                self.kl.slots.give(self._slot)
                self._slot = None

    def on_finish(self) -> None:
        self._release()


class ApiHandler(BaseHandler):
    """Needs the client password, a client key (server/client_keys.py) where `takes_client_keys`, or a page
    session of the playground or dashboard."""

    takes_client_keys = True  # the API's doors; the playground's own API is the owner's alone
    client_key: Any = None    # the ClientKey this request came with (None: PASSWORD or a page session)

    def refusal(self) -> ApiError | None:
        if self.request.method == "OPTIONS":
            return None
        allowed = self.kl.settings.WHITELIST_USER_AGENT
        if allowed:
            agent = self.request.headers.get("User-Agent", "").lower()
            if not any(a.lower() in agent for a in allowed):
                return ApiError(403, "This client is not allowed here (WHITELIST_USER_AGENT).",
                                code="client_not_allowed")
        offered = presented_credentials(self.request)
        if offered:  # counted when wrong; refused while this client is throttled
            keys = self.kl.client_keys
            if not self.takes_client_keys or not keys.by_hash:
                return self.kl.gate.check(self.client, offered, self.kl.password, unauthorized)
            refused, self.client_key = self.kl.gate.identify(self.client, offered, self.kl.password, keys.find,
                                                              unauthorized)
            if refused is None and self.client_key is not None:
                refused = keys.usable(self.client_key)  # switched off or expired: 401 before any body is read
            return refused
        if self.session_ok():
            return None
        return unauthorized()

    def session_ok(self) -> bool:
        """Signed in on the chat playground (or the dashboard) in this browser: the session cookie, and on
        anything but a read its CSRF token in X-CSRF-Token (the cookie alone could be sent by a form)."""
        session = self.kl.page_session(self.get_cookie)
        if session is None:
            return False
        return self.request.method in ("GET", "HEAD") or session.csrf_ok(self.request.headers.get("X-CSRF-Token"))

    def max_body(self) -> int:
        return int(self.kl.settings.MAX_REQUEST_BODY_MB * 1024 * 1024)


class JsonBodyHandler(ApiHandler):
    """A POST with a JSON body."""

    raw_body = b""

    def json_body(self) -> Any:
        raw = self.raw_body = self.body_bytes()
        if not raw.strip():
            raise ApiError(400, "The request body is empty; send a JSON object.")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "The request body is not valid UTF-8.") from None
        try:
            return ujson.loads(text)
        except (ValueError, OverflowError) as e:
            detail = str(e)
            if "recursion" in detail.lower() or "depth" in detail.lower():
                detail = "it is nested too deeply"
            raise ApiError(400, f"The request body is not valid JSON: {detail}") from None


class LoggedHandler(JsonBodyHandler):
    """A client request that gets a row in the request log (chat, embeddings, the native API)."""

    stream_requested = False

    def begin(self, stream: bool = False) -> RequestContext:
        """The request's context, passed down to the services: its trace for the log row, and what hanging up
        does (`X-Keyloom-Cancel: on-close`: the client's Stop means stop)."""
        self.ctx = RequestContext(cancel_on_close=self.request.headers.get("X-Keyloom-Cancel") == "on-close")
        self.ctx.trace.client = self.client_key
        self.stream_requested = stream
        return self.ctx

    def on_finish(self) -> None:
        super().on_finish()
        if self.kl.metrics.enabled:  # GET /metrics: the one per-request count (server/metrics.py)
            observe_request(self.kl, self)
        if self.ctx is None:
            return  # refused before it was parsed (auth, size): nothing worth a row
        trace = self.ctx.trace
        r = self.request
        self.kl.request_log.add(RequestRow(
            ts=self.kl.clock.time() - r.request_time(), key_fp=trace.key_fp,
            model=f"{trace.asked} → {trace.model}" if trace.asked and trace.model else trace.model or None,
            attempts=trace.attempts, status=CLIENT_CLOSED if self.ctx.client_gone and not self.error_status
            else self.logical_status(), latency_ms=1000.0 * r.request_time(),
            prompt_tokens=trace.prompt_tokens, completion_tokens=trace.completion_tokens, client_ip=self.client_ip,
            stream=self.stream_requested, error=self.error_message,
            client=trace.client.name if trace.client is not None else None))
        if trace.client is not None and trace.model:
            self.kl.client_keys.spent(trace.client, trace.model, trace.prompt_tokens + trace.completion_tokens)


class NotFoundHandler(BaseHandler):
    def refusal(self) -> ApiError | None:
        path = snippet(self.request.path, self.kl.redactor, 200)
        return ApiError(404, f"Unknown path {path}. The API lives under /v1 "
                             "(e.g. /v1/chat/completions, /v1/models).", code="not_found")


async def safe_flush(handler: BaseHandler) -> None:
    try:
        await handler.flush()
    except StreamClosedError:
        raise ClientGone() from None
