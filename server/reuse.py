"""Not paying twice for one answer: in-flight sharing and the cache of paid answers nobody received.

- **In-flight sharing** (INFLIGHT_SHARING): a request identical to one still running (same body
  bytes) waits for that answer instead of spending another key.
- **The cache** (CACHE_EXPIRY_TIME, MAX_CACHE_ENTRIES): an answer that was paid for but reached no
  client — the client hung up or timed out while Google was still working, or a spare answer from
  a concurrent round that lost the race — is kept and handed, once, to the next identical request
  (a client's retry, or the next "swipe"). An answer a client did receive is never cached: a swipe
  must not show the same text again.

While the cache is on, a hung-up client does not cancel its upstream call (the handler simply
goes on without a client): Google counts the request anyway, so the answer is worth keeping.
With the cache off (0), hanging up cancels the call as before, unless another identical request
is waiting for it.

Requests are "identical" when their body bytes are (a BLAKE2 hash: cheap even for long chats).
Only answers from non-streaming upstream calls (non-streaming requests and fake streaming) are
shared or cached; a real stream is delivered as it comes and cannot be handed to anyone else.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .clock import Clock
from .settings import Settings

if TYPE_CHECKING:
    from .request_context import RequestContext

log = logging.getLogger("keyloom.reuse")
Reply = dict[str, Any]


def request_key(model: str, raw: bytes) -> str:
    return model + ":" + hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass
class Flight:
    future: asyncio.Future[Reply]
    waiters: int = 0


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
        return "shared" if key in self._flights and self.sharing() else "upstream"

    def keeps(self, key: str) -> bool:
        """Should this request's upstream call go on when its client hangs up? When the answer would be kept
        (the cache is on) or someone else waits for it."""
        flight = self._flights.get(key)
        return self.caching() or (flight is not None and flight.waiters > 0)

    async def answer(self, key: str, produce: Callable[[], Awaitable[Reply]],
                     ctx: RequestContext) -> tuple[Reply, str]:
        """The answer for this request → (reply, "upstream" or "shared"). The caller has looked in the cache
        already (`take`). The first of identical requests calls `produce` in its own task (no task of its
        own is started: that costs every request); later ones wait for its result. `ctx.client_gone` says
        whether the caller's client has left, in which case the answer is cached for the next identical
        request."""
        flight = self._flights.get(key)
        if flight is not None and self.sharing():
            self.stats.shared += 1
            flight.waiters += 1
            try:
                return await asyncio.shield(flight.future), "shared"
            except asyncio.CancelledError:
                if not flight.future.cancelled():
                    raise  # our own client left
                # the first request was cancelled before it had an answer: ask for one ourselves
            finally:
                flight.waiters -= 1
        mine = None
        if self.sharing():
            mine = self._flights[key] = Flight(asyncio.get_running_loop().create_future())
        try:
            reply = await produce()
        except BaseException as e:
            if mine is not None:
                if isinstance(e, asyncio.CancelledError):
                    mine.future.cancel()
                else:
                    mine.future.set_exception(e)
                    mine.future.exception()  # seen: waiters (if any) raise it themselves
            raise
        finally:
            if mine is not None and self._flights.get(key) is mine:
                del self._flights[key]
        if mine is not None:
            mine.future.set_result(reply)
        if ctx.client_gone and (mine is None or mine.waiters == 0):
            self.put(key, reply, spare=False)  # nobody received it: keep it for the next identical request
        return reply, "upstream"

    def spare(self, key: str) -> Callable[[Reply], None]:
        return lambda reply: self.put(key, reply, spare=True)
