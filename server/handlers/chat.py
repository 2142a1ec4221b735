"""POST /v1/chat/completions: parse, hand to the chat service, write JSON or an event stream."""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from ..chat import stream_error_frame
from ..errors import ApiError
from ..translate.sse import KEEPALIVE
from .base import ClientGone, JsonBodyHandler, safe_flush

log = logging.getLogger("keyloom.chat")


class ChatCompletionsHandler(JsonBodyHandler):
    async def post(self) -> None:
        req = self.json_body()
        try:
            plan = await self.cancellable(self.kl.chat.prepare(req))
            if not plan.stream:
                reply = await self.cancellable(self.kl.chat.complete(plan))
                self.write_json(reply)
                return
            await self.write_event_stream(self.kl.chat.events(plan))
        except ClientGone:
            return

    def _start_event_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not hold the stream back

    async def write_event_stream(self, events: AsyncIterator[bytes]) -> None:
        """Write events as they come, and a keep-alive comment whenever none came for one interval.

        Until the first bytes are due (one interval), nothing is committed: an error that comes
        that fast is still answered with its own HTTP status. After that the status is 200 and a
        failure travels as one `data: {"error": …}` event that ends the stream.
        """
        interval = self.kl.settings.FAKE_STREAMING_INTERVAL
        it = events.__aiter__()
        committed = False
        pending: asyncio.Future[bytes] = asyncio.ensure_future(it.__anext__())
        self._task = pending
        try:
            while True:
                done, _ = await asyncio.wait((pending,), timeout=interval)
                if self._client_gone:
                    raise ClientGone()
                if not done:
                    if not committed:
                        self._start_event_stream()
                        committed = True
                    self.write(KEEPALIVE)
                    await safe_flush(self)
                    continue
                try:
                    data = pending.result()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    raise ClientGone() from None
                except ApiError as e:
                    if not committed:
                        raise
                    self.write(stream_error_frame(e))
                    await safe_flush(self)
                    return
                except Exception:
                    if not committed:
                        raise
                    log.exception("stream failed after it had started")
                    self.write(stream_error_frame(ApiError(500, "Keyloom hit an internal error in this stream.",
                                                           type="server_error", code="internal_error")))
                    await safe_flush(self)
                    return
                if not committed:
                    self._start_event_stream()
                    committed = True
                self.write(data)
                await safe_flush(self)
                self._task = pending = asyncio.ensure_future(it.__anext__())
        finally:
            self._task = None
            if not pending.done():
                pending.cancel()
                try:
                    await pending
                except BaseException:
                    pass
            await it.aclose()
