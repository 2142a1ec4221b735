"""POST /v1/chat/completions: parse, hand to the chat service, write JSON or an event stream."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from ..chat import stream_error_frame
from ..errors import ApiError
from ..keepalive import retrieve
from ..request_context import ClientGone, RequestContext
from ..translate.sse import KEEPALIVE, json_bytes
from .base import LoggedHandler, safe_flush

log = logging.getLogger("keyloom.chat")


class ChatCompletionsHandler(LoggedHandler):
    async def post(self) -> None:
        req = self.json_body()
        ctx = self.begin(isinstance(req, dict) and req.get("stream") is True)
        try:
            await ctx.run(self._serve(req, ctx))  # hanging up cancels it all (unless the answer is still wanted)
        except ClientGone:
            return

    async def _serve(self, req: object, ctx: RequestContext) -> None:
        route = self.kl.router.resolve(req.get("model")) if isinstance(req, dict) else None
        if route is not None and route.kind == "openai" and isinstance(req, dict):
            await self._forward(route, req, ctx)
            return
        plan = await self.kl.chat.prepare(req, self.client_ip, ctx, self.raw_body, route)
        if plan.how != "upstream":
            self.set_header("X-Keyloom-Answer", plan.how)  # cache: a paid answer nobody had received
        if not plan.stream:
            if self.kl.settings.NONSTREAM_KEEPALIVE:
                await self.write_with_keepalive(self.kl.chat.complete(plan))
            else:
                self.write_json(await self.kl.chat.complete(plan))
        else:
            # Both kinds of stream wait up to one keep-alive interval for their first output (for fake streaming,
            # the whole answer), so that a quick failure (every key over quota, a blocked prompt, thinking that
            # used up max_tokens) still gets its own HTTP status rather than a 200 and an error event.
            await self.write_event_stream(self.kl.chat.events(plan), self.kl.settings.FAKE_STREAMING_INTERVAL)

    async def _forward(self, route: Any, req: dict, ctx: RequestContext) -> None:
        """An OpenAI-compatible upstream's model: its answer passes through as it is."""
        fwd = self.kl.forwarder
        body = fwd.prepare(route, req, self.client_ip, ctx.trace)
        if req.get("stream") is not True:
            data = await fwd.complete(route, body, ctx.trace)
            self.set_header("Content-Type", "application/json")
            self.finish(data)
            return
        await self.write_event_stream(fwd.stream(route, body, ctx.trace), self.kl.settings.FAKE_STREAMING_INTERVAL)

    async def write_with_keepalive(self, answer: Any) -> None:
        """NONSTREAM_KEEPALIVE: while the answer is pending, a space every interval before the JSON body
        (JSON allows leading whitespace), so idle-cutting proxies keep the connection. The status is
        committed as 200 with the first space; an error after that travels in the body."""
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
            self.finish(json_bytes(e.body()))
            return
        finally:
            ctx.scope = outer
            if not task.done():
                task.cancel()
        self.write_json(body)

    last_write = 0.0  # when this stream last wrote anything (the keep-alive ticker reads it)

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
        self.write(KEEPALIVE)
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
                    self.write(stream_error_frame(e))
                    await safe_flush(self)
                    return
                except Exception:
                    if not committed:
                        raise
                    log.exception("stream failed after it had started")
                    err = ApiError(500, "Keyloom hit an internal error in this stream.", type="server_error",
                                   code="internal_error")
                    self.note_error(err)
                    self.write(stream_error_frame(err))
                    await safe_flush(self)
                    return
                if not committed:
                    self._commit(keepalive=False)
                    committed = True
                self.write(data)
                self.last_write = time.monotonic()
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
