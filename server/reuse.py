"""Not paying twice for one answer: in-flight sharing and the cache of paid answers nobody received.

- **In-flight sharing** (INFLIGHT_SHARING): a request identical to one still running (same body
  bytes) waits for that answer instead of spending another key.
- **The cache** (CACHE_EXPIRY_TIME, MAX_CACHE_ENTRIES): an answer that was paid for but reached no
  client — the client hung up or timed out while Google was still working, or a spare answer from
  a concurrent round that lost the race — is kept and handed, once, to the next identical request
  (a client's retry, or the next "swipe"). An answer a client did receive is never cached: a swipe
  must not show the same text again.

While the cache is on, a hung-up client does not cancel its upstream call: Google counts the
request anyway, so the answer is worth keeping. With the cache off (0), hanging up cancels the
call as before, unless another identical request is waiting for it.

Requests are "identical" when their body bytes are (a BLAKE2 hash: cheap even for long chats).
Only answers from non-streaming upstream calls (non-streaming requests and fake streaming) are
shared or cached; a real stream is delivered as it comes and cannot be handed to anyone else.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .clock import Clock
from .settings import Settings

log = logging.getLogger("keyloom.reuse")
Reply = dict[str, Any]


def request_key(model: str, raw: bytes) -> str:
    return model + ":" + hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass
class Flight:
    task: asyncio.Future[Reply]
    waiters: int = 0
    delivered: bool = False


@dataclass
class ReuseStats:
    shared: int = 0          # requests answered by an identical request's upstream call
    cache_hits: int = 0      # requests answered from the cache
    cached_unreceived: int = 0  # answers kept because their client had left
    cached_spares: int = 0   # spare answers from concurrent rounds kept
    expired: int = 0         # cached answers dropped unused (expired or pushed out)
    keepalive_bodies: int = 0  # non-streaming answers that needed whitespace keep-alives

    def view(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Entry:
    expires: float
    replies: collections.deque[Reply] = field(default_factory=collections.deque)


class Reuse:
    def __init__(self, settings: Callable[[], Settings], clock: Clock):
        self.settings = settings
        self.clock = clock
        self.stats = ReuseStats()
        self._flights: dict[str, Flight] = {}
        self._cache: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._size = 0

    # -- the cache -------------------------------------------------------------------------------

    def caching(self) -> bool:
        s = self.settings()
        return s.CACHE_EXPIRY_TIME > 0 and s.MAX_CACHE_ENTRIES > 0

    def put(self, key: str, reply: Reply, *, spare: bool) -> None:
        if not self.caching():
            return
        s = self.settings()
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = _Entry(0.0)
        entry.expires = self.clock.monotonic() + s.CACHE_EXPIRY_TIME
        entry.replies.append(reply)
        self._cache.move_to_end(key)
        self._size += 1
        if spare:
            self.stats.cached_spares += 1
        else:
            self.stats.cached_unreceived += 1
        while self._size > s.MAX_CACHE_ENTRIES and self._cache:
            oldest_key, oldest = next(iter(self._cache.items()))
            oldest.replies.popleft()
            self._size -= 1
            self.stats.expired += 1
            if not oldest.replies:
                del self._cache[oldest_key]

    def take(self, key: str) -> Reply | None:
        """One cached answer for this request, removed from the cache (each is handed out once)."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock.monotonic() or not self.caching():
            self._size -= len(entry.replies)
            self.stats.expired += len(entry.replies)
            del self._cache[key]
            return None
        reply = entry.replies.popleft()
        self._size -= 1
        if not entry.replies:
            del self._cache[key]
        self.stats.cache_hits += 1
        return reply

    def __len__(self) -> int:
        return self._size

    # -- in-flight sharing -----------------------------------------------------------------------

    def sharing(self) -> bool:
        return bool(self.settings().INFLIGHT_SHARING)

    def how(self, key: str) -> str:
        """Where an answer for this request would come from now: shared (one is on its way) or upstream."""
        return "shared" if self.settings().INFLIGHT_SHARING and key in self._flights else "upstream"

    async def answer(self, key: str, produce: Callable[[], Awaitable[Reply]]) -> tuple[Reply, str]:
        """The answer for this request → (reply, how: "upstream" or "shared"). The caller has looked in the
        cache already (`take`)."""
        sharing = self.settings().INFLIGHT_SHARING
        flight = self._flights.get(key) if sharing else None
        how = "shared"
        if flight is None:
            how = "upstream"
            flight = Flight(asyncio.ensure_future(produce()))
            if sharing:
                self._flights[key] = flight
            flight.task.add_done_callback(lambda t: self._landed(key, flight))
        else:
            self.stats.shared += 1
        flight.waiters += 1
        try:
            reply = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done() and not self.caching():
                flight.task.cancel()  # nobody wants it and nobody would keep it
            raise
        flight.waiters -= 1
        flight.delivered = True
        return reply, how

    def _landed(self, key: str, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.task.cancelled() or flight.task.exception() is not None:
            return
        if not flight.delivered and flight.waiters == 0:
            # every client left before the answer came: keep it for the next identical request
            self.put(key, flight.task.result(), spare=False)

    def spare(self, key: str) -> Callable[[Reply], None]:
        return lambda reply: self.put(key, reply, spare=True)
