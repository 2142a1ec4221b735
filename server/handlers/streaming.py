"""What every handler that answers with a stream shares, whatever its dialect: holding back for one keep-alive
interval so that quick failures keep their HTTP status, keep-alives from one ticker during silences, cancelling
the pending read when the client hangs up, and ending a started stream with an error event rather than a
silent close. A dialect says only how its keep-alive and its error event look (`keepalive_frame`,
`error_frame`) and how its errors look before the stream started (`shape_error`, server/handlers/base.py)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Any

from ..errors import ApiError
from ..keepalive import retrieve
from ..request_context import ClientGone, RequestContext
from ..translate.sse import KEEPALIVE, frames, json_bytes
from .base import LoggedHandler, safe_flush

log = logging.getLogger("keyloom.stream")


class StreamingHandler(LoggedHandler):
    """POST a JSON request, answered whole or as a stream: `serve` does the route's work."""

    keepalive_frame = KEEPALIVE  # written into a quiet stream every interval

    async def post(self) -> None:
        req = self.json_body()
        ctx = self.begin(isinstance(req, dict) and req.get("stream") is True)
        try:
            await ctx.run(self.serve(req, ctx))  # hanging up cancels it all (unless the answer is still wanted)
        except ClientGone:
            return

    async def serve(self, req: Any, ctx: RequestContext) -> None:
        raise NotImplementedError

    def gemini_route(self, req: Any) -> Any:
        """For the agents' dialects: the Vertex AI route of the requested model (None: the Gemini API). A model
        of an OpenAI-compatible upstream is refused: that upstream is reached through Chat Completions only."""
        if not isinstance(req, dict):
            raise ApiError(400, "the request body must be a JSON object")
        route = self.kl.router.resolve(self.kl.chat.served(req.get("model")))
        if route is not None and route.kind == "openai":
            raise ApiError(400, f"The model {str(req.get('model'))[:80]} is served by an OpenAI-compatible "
                                "upstream, which Keyloom reaches through Chat Completions only; use "
                                "/v1/chat/completions for it.", param="model")
        return route

    def error_frame(self, err: ApiError) -> bytes:
        """The event that ends a started stream with `err` (Chat Completions: one `data: {"error": …}`)."""
        return frames([self.shape_error(err)[1]])

    async def write_answer(self, answer: Awaitable[Any]) -> Any:
        """Write a whole (not streamed) answer, with NONSTREAM_KEEPALIVE's spaces while it is made when that is
        on. → the answer written, or None when an error went out in its place."""
        if self.kl.settings.NONSTREAM_KEEPALIVE:
            return await self.write_with_keepalive(answer)
        body = await answer
        self.write_json(body)
        return body

    async def write_with_keepalive(self, answer: Any) -> Any:
        """NONSTREAM_KEEPALIVE: while the answer is pending, a space every interval before the JSON body
        (JSON allows leading whitespace), so idle-cutting proxies keep the connection. The status is
        committed as 200 with the first space; an error after that travels in the body. → the answer written,
        or None when an error was."""
        task = asyncio.ensure_future(answer)
        ctx = self.ctx
        assert ctx is not None
        outer, ctx.scope = ctx.scope, task  # hanging up cancels the answer, not this loop
        interval = self.kl.settings.NONSTREAM_KEEPALIVE_INTERVAL
        committed = False
        try:
            while True:
                done, _ = await asyncio.wait((task,), timeout=interval)
                if done:
                    break
                if not committed:
                    committed = True
                    self.kl.reuse.stats.keepalive_bodies += 1
                    self.set_header("Content-Type", "application/json")
                    self.set_header("X-Accel-Buffering", "no")
                self.write(b" ")
                await safe_flush(self)
            try:
                body = task.result()
            except asyncio.CancelledError:
                raise ClientGone() from None
        except ApiError as e:
            if not committed:
                raise
            self.note_error(e)
            self.finish(json_bytes(self.shape_error(e)[1]))
            return None
        finally:
            ctx.scope = outer
            if not task.done():
                task.cancel()
        self.write_json(body)
        return body

    last_write = 0.0  # when this stream last wrote anything (the keep-alive ticker reads it)
    first_event_at = 0.0  # time.time() of its first event of output (GET /metrics: time to first event)

    def _commit(self, keepalive: bool) -> None:
        """Send the SSE headers (status 200 from here on), maybe a first keep-alive, and join the ticker."""
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not hold the stream back
        if keepalive:
            self.send_keepalive()
        self.kl.keepalive.add(self)

    def send_keepalive(self) -> None:
        if self._finished or self.client_gone:
            return
        self.write(self.keepalive_frame)
        self.last_write = time.monotonic()
        self.flush().add_done_callback(retrieve)

    async def write_event_stream(self, events: AsyncGenerator[bytes, None], hold_back: float) -> None:
        """Write events as they come; the keep-alive ticker fills any silence longer than the interval.

        For `hold_back` seconds nothing is committed, so an error that comes that fast is still
        answered with its own HTTP status. Then the SSE headers and a first keep-alive go out, the
        status is 200, and a failure travels as one `data: {"error": …}` event that ends the stream.
        """
        it = events
        committed = False
        ctx = self.ctx
        assert ctx is not None
        pending: asyncio.Future[bytes] = asyncio.ensure_future(it.__anext__())
        outer, ctx.scope = ctx.scope, pending  # hanging up cancels the pending read
        try:
            await asyncio.wait((pending,), timeout=hold_back)
            while True:
                if not committed and not pending.done():
                    self._commit(keepalive=True)
                    committed = True
                try:
                    data = await pending
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    raise ClientGone() from None
                except ApiError as e:
                    if not committed:
                        raise
                    self.note_error(e)
                    self.write(self.error_frame(e))
                    await safe_flush(self)
                    return
                except Exception:
                    if not committed:
                        raise
                    log.exception("stream failed after it had started")
                    err = ApiError(500, "Keyloom hit an internal error in this stream.", type="server_error",
                                   code="internal_error")
                    self.note_error(err)
                    self.write(self.error_frame(err))
                    await safe_flush(self)
                    return
                if not committed:
                    self._commit(keepalive=False)
                    committed = True
                self.write(data)
                self.last_write = time.monotonic()
                if not self.first_event_at:
                    self.first_event_at = time.time()
                await safe_flush(self)
                ctx.scope = pending = asyncio.ensure_future(it.__anext__())
        finally:
            self.kl.keepalive.discard(self)
            ctx.scope = outer
            if not pending.done():
                pending.cancel()
            try:
                await pending  # also marks a finished one's exception as seen
            except BaseException:
                pass
            await it.aclose()
