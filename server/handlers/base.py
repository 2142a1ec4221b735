"""What every handler shares: the application object, errors in the OpenAI shape, CORS,
authentication, bounded JSON bodies, and cancelling work when the client hangs up."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, TypeVar

import tornado.web
import ujson
from tornado import httputil
from tornado.iostream import StreamClosedError

from ..auth import authorized
from ..dispatch import Trace
from ..errors import ApiError, unauthorized
from ..limits import client_ip
from ..store.requestlog import RequestRow
from ..translate.sse import json_bytes

if TYPE_CHECKING:
    from ..app import Keyloom

log = logging.getLogger("keyloom.http")
T = TypeVar("T")

_STATUS_TEXT = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                405: "Method not allowed", 413: "Request body too large", 429: "Too many requests"}


class ClientGone(Exception):
    """The client closed its connection; there is nobody left to answer."""


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


class BaseHandler(tornado.web.RequestHandler):
    _task: asyncio.Future[Any] | None = None
    _client_gone = False
    error_message: str | None = None   # what the client was told, when it was an error
    error_status: int | None = None    # that error's status (also when it travelled inside a 200 stream)

    @property
    def kl(self) -> "Keyloom":
        """The application object (set on the Tornado application; available even before initialize)."""
        return self.application.keyloom  # type: ignore[attr-defined]

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
                                                 "Authorization, Content-Type, x-goog-api-key"))
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json_bytes(obj))

    def note_error(self, err: ApiError) -> None:
        self.error_message = self.kl.redactor(err.message)
        self.error_status = err.status

    def logical_status(self) -> int:
        return self.error_status or self.get_status()

    def write_api_error(self, err: ApiError) -> None:
        self.note_error(err)
        self.clear()  # drops headers set so far and re-applies the default (CORS) ones
        for k, v in err.headers.items():
            self.set_header(k, v)
        self.write_json(err.body(), err.status)

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
        self.write_api_error(ApiError(500, "Keyloom hit an internal error while handling this request.",
                                      type="server_error", code="internal_error"))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ApiError, ClientGone)):
            return
        if isinstance(value, tornado.web.HTTPError) and value.status_code < 500:
            return
        log.error("unhandled error on %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ClientGone):
            return  # nothing to write to
        super()._handle_request_exception(e)

    # -- client disconnects --------------------------------------------------------------------

    def keep_running(self) -> bool:
        """Whether the work goes on when the client hangs up (its result is kept for someone else)."""
        return False

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._task is not None and not self._task.done() and not self.keep_running():
            self._task.cancel()

    async def cancellable(self, aw: Awaitable[T]) -> T:
        """Await `aw` so that it is cancelled (closing its upstream call) if the client hangs up.

        Tornado already runs each request in a task of its own: that task is what gets cancelled,
        and the cancellation is turned back into ClientGone here, so no second task is needed."""
        task = asyncio.current_task()
        self._task = task
        try:
            return await aw
        except asyncio.CancelledError:
            if self._client_gone and task is not None:
                task.uncancel()
                raise ClientGone() from None
            raise
        finally:
            self._task = None

    def prepare(self) -> None:
        self._counted = True
        self.kl.in_flight += 1

    def on_finish(self) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            self.kl.in_flight -= 1


DRAIN_SLACK = 1024 * 1024


class ApiHandler(BaseHandler):
    """Needs the client password."""

    def auth_error(self) -> ApiError | None:
        if self.request.method == "OPTIONS" or authorized(self.request, self.kl.password):
            return None
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

    def prepare(self) -> None:
        super().prepare()
        if (err := self.auth_error()) is not None:
            raise err


@tornado.web.stream_request_body
class JsonBodyHandler(ApiHandler):
    """A POST with a JSON body, refused with 413 before it is read when it is too large.

    An unauthenticated request's body is read and dropped before the 401 goes out: answering
    while the client is still sending makes Tornado close the socket, and the client may then
    see a connection reset instead of the answer.
    """

    raw_body = b""

    def prepare(self) -> None:
        BaseHandler.prepare(self)
        self._chunks: list[bytes] = []
        self._deferred = self.auth_error()
        limit = int(self.kl.settings.MAX_REQUEST_BODY_MB * 1024 * 1024)
        length = self.request.headers.get("Content-Length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise ApiError(400, "Content-Length is not a number") from None
            if declared > limit:
                too_large = ApiError(413, f"The request body is {declared} bytes; the limit is {limit} bytes "
                                          "(MAX_REQUEST_BODY_MB).", code="request_too_large")
                if declared > 2 * limit + DRAIN_SLACK:
                    raise too_large  # not worth reading: answer now and let the connection close
                # Read it and drop it, then answer: a client still sending when the answer comes may
                # see a reset connection instead of the 413.
                self._deferred = self._deferred or too_large
                self.request.connection.set_max_body_size(declared)
                return
        self.request.connection.set_max_body_size(limit)

    def data_received(self, chunk: bytes) -> None:
        if not self._finished and self._deferred is None:
            self._chunks.append(chunk)

    def json_body(self) -> Any:
        if self._deferred is not None:
            raise self._deferred
        raw = self.raw_body = b"".join(self._chunks)
        self._chunks = []
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

    trace: Trace | None = None
    client_ip = ""
    stream_requested = False

    def begin(self, stream: bool = False) -> Trace:
        self.trace = Trace()
        self.client_ip = client_ip(self.request, self.kl.proxy_hops)
        self.stream_requested = stream
        return self.trace

    def on_finish(self) -> None:
        super().on_finish()
        trace = self.trace
        if trace is None:
            return  # refused before it was parsed (auth, size): nothing worth a row
        r = self.request
        self.kl.request_log.add(RequestRow(
            ts=self.kl.clock.time() - r.request_time(), model=trace.model or None, key_fp=trace.key_fp,
            attempts=trace.attempts, status=self.logical_status(), latency_ms=1000.0 * r.request_time(),
            prompt_tokens=trace.prompt_tokens, completion_tokens=trace.completion_tokens, client_ip=self.client_ip,
            stream=self.stream_requested, error=self.error_message))


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"Unknown path {self.request.path}. The API lives under /v1 "
                            "(e.g. /v1/chat/completions, /v1/models).", code="not_found")


async def safe_flush(handler: BaseHandler) -> None:
    try:
        await handler.flush()
    except StreamClosedError:
        raise ClientGone() from None
