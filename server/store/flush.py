"""Persistence of what the request path counts: loaded at start-up, flushed periodically, flushed at stop.

The owners (the key pool and its usage counters, the client limits, the client keys, the request log, the
audit trail) keep everything in memory and hand over what changed; one flush writes it all as one batch
through the store (server/store/counters.py: SQLite, or Redis shared by several processes). If a write
fails, the batch is kept and sent first at the next tick: nothing is lost but what a crash takes between two
ticks, and nothing is counted twice.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

from tornado.ioloop import PeriodicCallback

from ..admin.audit import Audit
from ..clock import Clock
from ..limits import ClientLimits
from ..pool.keys import KeyPool
from ..pool.learned import LEARNED_TTL
from ..pool.quota import MemoryUsage
from ..settings import Settings
from .counters import Batch, CounterStore, Cuts, Totals
from .errors import StoreDown
from .requestlog import DayOf, RequestLog, outcome

log = logging.getLogger("keyloom.store")

PRUNE_EVERY = 3600.0
# A process sharing a store that counted nothing since its last tick reads the cluster's totals only every this
# many ticks (it decides nothing meanwhile; the first request after a pause is decided on totals at most this
# many ticks old, the next ones on fresh ones). An idle replica talks to Redis ten times less: hosted Redis
# plans count commands.
IDLE_READ_EVERY = 10
DAILY_DAYS = 400


class Flusher:
    def __init__(self, store: CounterStore, pool: KeyPool, limits: ClientLimits, requests: RequestLog,
                 settings: Callable[[], Settings], clock: Clock, audit: Audit | None = None):
        self.store = store
        self.pool = pool
        self.usage: MemoryUsage = pool.usage
        self.limits = limits
        self.requests = requests
        self.settings = settings
        self.clock = clock
        self.audit = audit
        self.client_keys: Any = None  # ClientKeys, whose usage this flush writes too (set by the app)
        self._callback: PeriodicCallback | None = None
        self._running: asyncio.Task[Any] | None = None
        self._last_prune = 0.0
        self._day_of: DayOf | None = None
        self._lock = asyncio.Lock()  # one flush at a time: a second caller waits, then writes what is left
        self._unsent: Batch | None = None  # a batch whose write failed: sent again, first, under its id
        self._idle_ticks = 0
        self._urgent: asyncio.Future[None] | None = None
        self._remote: asyncio.Future[None] | None = None
        # batch ids: unique per process run, so a shared store can tell a batch sent again from a new one
        self._ids = (f"{os.getpid()}-{secrets.token_hex(4)}-{n}" for n in itertools.count())
        self.flushes = 0
        self.failed_flushes = 0
        self.rows_since_prune = 0
        self.prunes = 0
        # The newest time found in the data at start, and when (by the monotonic clock) that was read: pruning
        # trusts only the time it has seen pass since (see trusted_now).
        self._seen: float | None = None
        self._seen_mono = 0.0

    async def load(self) -> None:
        """Read back today's counts and every key's state."""
        day = self.pool.quota_day.today()
        snap = await self.store.load(day)
        self.usage.load(day, snap.totals.usage)
        self.pool.day = day
        self.pool.load(snap.states.keys, snap.states.models)
        self.pool.learned.load(snap.states.learned, snap.states.projects)
        self.limits.load(day, snap.totals.clients)
        if self.client_keys is not None:
            self.client_keys.load_usage(day, snap.totals.client_keys)
        self._seen = snap.newest
        self._seen_mono = self.clock.monotonic()

    def trusted_now(self) -> float:
        """The time pruning may act on: the wall clock, but never further than the newest record found at start
        plus the time measured (by the monotonic clock) since. A clock that jumps ahead (a bad NTP step, a VM
        restored from a snapshot, a mistaken TZ fix) would otherwise make the first prune delete days of history
        that are not old at all. The cost: after a long stop, history is pruned late by as long as the process
        was down, until the next restart reads newer records."""
        now = self.clock.time()
        if self._seen is None:
            return now
        return min(now, max(self._seen, self._seen + self.clock.monotonic() - self._seen_mono))

    async def flush(self, timer: bool = False) -> int:
        """Write everything that changed as one batch. Returns the number of rows written.
        When it returns, everything changed before the call is stored (and, with a shared store, the cluster's
        totals read back). `timer`: the periodic tick, which an idle process may let pass without a read."""
        async with self._lock:
            written = 0
            if self._unsent is not None:
                written += await self._write(self._unsent)
            batch = self._drain()
            if timer and self.store.shared and not batch.size():
                self._idle_ticks += 1
                if self._idle_ticks < IDLE_READ_EVERY:
                    return written  # nothing counted here since the last tick: nothing decided on stale totals
            self._idle_ticks = 0
            return written + await self._write(batch)

    def _drain(self) -> Batch:
        self.pool.check_day()  # a new quota day starts counting from 0 even when no request comes
        keys, models = self.pool.drain_states()
        learned, projects = self.pool.learned.drain()
        requests = self.requests.drain()
        return Batch(next(self._ids), usage=self.usage.drain(), key_states=keys,
                     disabled=self.pool.drain_disabled(), model_states=models,
                     learned=learned, projects=projects, clients=self.limits.drain(),
                     client_keys=self.client_keys.drain() if self.client_keys is not None else [],
                     requests=requests, daily=self._daily(requests),
                     audit=self.audit.drain() if self.audit is not None else [],
                     minutes=self.limits.minutes.drain())

    async def _write(self, batch: Batch) -> int:
        total = batch.size()
        if not total and not self.store.shared:
            return 0
        self._unsent = batch
        try:
            totals = await self.store.write(batch, self.pool.day, self.limits.known(),
                                            self.limits.minutes.minutes())
        except BaseException:
            self.failed_flushes += 1
            raise
        self._unsent = None
        self.flushes += 1
        self.rows_since_prune += len(batch.requests)
        if totals is not None:
            self._settle(totals)
        return total

    def soon(self) -> None:
        """Write now rather than at the next tick (a key left play: a shared store tells the others at once).
        Coalesced: while one such write is pending, asking again adds nothing."""
        if self.store.shared and (self._urgent is None or self._urgent.done()):
            self._urgent = asyncio.ensure_future(self._quiet(self.flush()))

    def others_changed(self) -> None:
        """Another process changed a key state: read the states now."""
        if self._remote is None or self._remote.done():
            self._remote = asyncio.ensure_future(self._quiet(self.refresh()))

    async def refresh(self) -> None:
        async with self._lock:
            if self._unsent is not None:  # its counts and states are in memory, not yet in the store's totals:
                await self._write(self._unsent)  # settling before it is written would drop them until it is
                return
            totals = await self.store.read(self.pool.day, self.limits.known(), self.limits.minutes.minutes())
            if totals is not None:
                self._settle(totals)

    @staticmethod
    async def _quiet(coro: Any) -> None:
        try:
            await coro
        except StoreDown:
            pass  # said once by the store; the tick tries again
        except Exception:
            log.exception("writing or reading the shared store failed; the next tick tries again")

    def _settle(self, totals: Totals) -> None:
        """The cluster's counts (a shared store): every owner decides from them until the next tick."""
        if totals.states is not None:
            self.pool.apply_states(totals.states.keys, totals.states.models)
            self.pool.learned.apply(totals.states.learned, totals.states.projects)
        changed = self.usage.settle(totals.day, totals.usage)
        self.limits.settle(totals.day, totals.clients)
        self.limits.minutes.settle(totals.minutes)
        if self.client_keys is not None:
            self.client_keys.settle(totals.day, totals.client_keys)
        if changed or totals.states is not None:
            self.pool.counts_changed()

    def day_of(self) -> DayOf:
        tz = self.settings().TZ
        if self._day_of is None or self._day_of.tz != tz:
            self._day_of = DayOf(tz)
        return self._day_of

    def _daily(self, requests: list[Any]) -> list[tuple[str, str, int]]:
        counts: dict[tuple[str, str], int] = {}
        day_of = self.day_of()
        for r in requests:
            k = (day_of(r.ts), outcome(r.status))
            counts[k] = counts.get(k, 0) + 1
        return [(day, kind, n) for (day, kind), n in counts.items()]

    async def prune(self) -> None:
        """Drop what is old (by `trusted_now`): request-log rows older than REQUEST_LOG_DAYS or beyond
        REQUEST_LOG_MAX_ROWS, per-address counts of past days, daily totals and audit rows older than
        DAILY_DAYS, expired sessions, and key states that no longer say anything."""
        s = self.settings()
        now = self.clock.time()
        trusted = self.trusted_now()
        cutoff = trusted - s.REQUEST_LOG_DAYS * 86400
        day_of = self.day_of()
        await self.store.prune(Cuts(
            now=now, requests_before=cutoff, max_requests=s.REQUEST_LOG_MAX_ROWS,
            clients_before_day=day_of(cutoff), daily_before_day=day_of(trusted - DAILY_DAYS * 86400),
            audit_before=trusted - DAILY_DAYS * 86400, quota_day=self.pool.quota_day.today(),
            learned_before=trusted - LEARNED_TTL))
        self._last_prune = now
        self.rows_since_prune = 0
        self.prunes += 1

    def prune_due(self) -> bool:
        """Hourly, and sooner when the request log grows fast (a flood must not outgrow REQUEST_LOG_MAX_ROWS
        for an hour before it is cut back)."""
        return self.clock.time() - self._last_prune >= PRUNE_EVERY or \
            self.rows_since_prune >= self.settings().REQUEST_LOG_MAX_ROWS // 10

    async def _tick(self) -> None:
        try:
            await self.flush(timer=True)
            if self.prune_due():
                await self.prune()
        except StoreDown:
            pass  # the store said so once; the batch is kept for the next tick
        except Exception:
            log.exception("writing counters to the store failed; will try again")

    def _on_timer(self) -> None:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._tick())

    def start(self) -> None:
        self._callback = PeriodicCallback(self._on_timer, self.settings().FLUSH_INTERVAL * 1000)
        self._callback.start()

    async def stop(self) -> None:
        """Stop the timer, wait for a flush under way, then flush what is left."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        for task in (self._urgent, self._remote):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        await self.flush()
