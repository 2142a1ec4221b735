"""Keep-alives for every open event stream, from one ticker.

A timer per stream costs a wake-up, a future and a timer handle per keep-alive; with
thousands of clients waiting on slow replies that load alone makes the loop late, and
late keep-alives are what proxies time out on. Instead every stream notes when it last
wrote, and one periodic callback writes `: keep-alive` to each stream that has been
quiet for (almost) an interval (the stream writes the comment itself: `send_keepalive`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from tornado.ioloop import PeriodicCallback

TICKS_PER_INTERVAL = 10  # a quiet stream gets its keep-alive between 0.9 and 1.0 interval after its last write


class Stream(Protocol):
    last_write: float

    def send_keepalive(self) -> None: ...


class KeepaliveTicker:
    def __init__(self, interval: Callable[[], float]):
        self.interval = interval
        self.streams: set[Stream] = set()
        self._callback: PeriodicCallback | None = None
        self._period = 0.0
        self.sent = 0

    def add(self, stream: Stream) -> None:
        stream.last_write = time.monotonic()
        self.streams.add(stream)
        self._ensure_running()

    def discard(self, stream: Stream) -> None:
        self.streams.discard(stream)

    def _ensure_running(self) -> None:
        period = self.interval() / TICKS_PER_INTERVAL
        if self._callback is not None and period == self._period:
            return
        if self._callback is not None:
            self._callback.stop()
        self._period = period
        self._callback = PeriodicCallback(self._tick, period * 1000)
        self._callback.start()

    def _tick(self) -> None:
        interval = self.interval()
        due = time.monotonic() - interval + interval / TICKS_PER_INTERVAL
        for stream in list(self.streams):
            if stream.last_write <= due:
                stream.send_keepalive()
                self.sent += 1

    def stop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def __len__(self) -> int:
        return len(self.streams)


def retrieve(future: Any) -> None:
    """A flush nobody awaits: mark its outcome (a closed stream, usually) as seen."""
    if not future.cancelled():
        future.exception()
