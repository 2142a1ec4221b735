"""Persistence of what the request path counts: loaded at start-up, flushed periodically, flushed at stop.

The owners (the key pool and its usage counters, the client limits, the request log)
keep everything in memory and hand over what changed; one flush writes it all in one
transaction. If a write fails, the owners take their rows back and the next tick
tries again: nothing is lost but what a crash takes between two ticks.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tornado.ioloop import PeriodicCallback

from ..admin.audit import INSERT as INSERT_AUDIT
from ..admin.audit import Audit
from ..clock import Clock
from ..limits import ClientLimits
from ..pool.keys import KeyPool
from ..pool.learned import LEARNED_TTL
from ..pool.quota import MemoryUsage, Usage
from ..settings import Settings
from .db import Database
from .requestlog import DayOf, RequestLog, outcome

log = logging.getLogger("keyloom.store")

PRUNE_EVERY = 3600.0

UPSERT_USAGE = (
    "INSERT INTO key_usage (day, key_fp, model, requests, successes, failures, prompt_tokens, completion_tokens) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, key_fp, model) DO UPDATE SET "
    "requests = excluded.requests, successes = excluded.successes, failures = excluded.failures, "
    "prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens")
UPSERT_FAILURES = (
    "INSERT INTO key_failures (day, key_fp, model, kind, count) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (day, key_fp, model, kind) DO UPDATE SET count = excluded.count")
UPSERT_KEY_STATE = (
    "INSERT OR REPLACE INTO key_state (key_fp, disabled_reason, disabled_at, backoff_until, backoff_failures, "
    "last_error, last_error_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
UPSERT_MODEL_STATE = (
    "INSERT OR REPLACE INTO key_model_state (key_fp, model, cooldown_until, exhausted_day, reason) "
    "VALUES (?, ?, ?, ?, ?)")
UPSERT_LEARNED = (
    "INSERT OR REPLACE INTO key_learned_limit (key_fp, model, per_day, per_minute, tokens_per_minute, learned_at) "
    "VALUES (?, ?, ?, ?, ?, ?)")
UPSERT_PROJECT = "INSERT OR REPLACE INTO key_project (key_fp, project) VALUES (?, ?)"
UPSERT_CLIENT = (
    "INSERT INTO client_usage (day, ip, requests) VALUES (?, ?, ?) "
    "ON CONFLICT (day, ip) DO UPDATE SET requests = excluded.requests")
INSERT_REQUEST = (
    "INSERT INTO request_log (ts, model, key_fp, attempts, status, latency_ms, prompt_tokens, completion_tokens, "
    "client_ip, stream, error, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
UPSERT_CLIENT_KEY_USAGE = (
    "INSERT INTO client_key_usage (day, key_id, model, requests, tokens) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (day, key_id, model) DO UPDATE SET requests = excluded.requests, tokens = excluded.tokens")
ADD_DAILY = (
    "INSERT INTO request_daily (day, outcome, count) VALUES (?, ?, ?) "
    "ON CONFLICT (day, outcome) DO UPDATE SET count = count + excluded.count")
DAILY_DAYS = 400


class Flusher:
    def __init__(self, db: Database, pool: KeyPool, limits: ClientLimits, requests: RequestLog,
                 settings: Callable[[], Settings], clock: Clock, audit: Audit | None = None):
        self.db = db
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
        usage: dict[tuple[str, str], Usage] = {}
        for fp, model, req, ok, fail, pt, ct in await self.db.fetchall(
                "SELECT key_fp, model, requests, successes, failures, prompt_tokens, completion_tokens "
                "FROM key_usage WHERE day = ?", (day,)):
            usage[(fp, model)] = Usage(req, ok, fail, pt, ct)
        for fp, model, kind, count in await self.db.fetchall(
                "SELECT key_fp, model, kind, count FROM key_failures WHERE day = ?", (day,)):
            usage.setdefault((fp, model), Usage()).failure_kinds[kind] = count
        self.usage.load(day, usage)
        self.pool.day = day
        key_states = {row[0]: tuple(row[1:]) for row in await self.db.fetchall(
            "SELECT key_fp, disabled_reason, disabled_at, backoff_until, backoff_failures, last_error, last_error_at "
            "FROM key_state")}
        model_states = {(row[0], row[1]): tuple(row[2:]) for row in await self.db.fetchall(
            "SELECT key_fp, model, cooldown_until, exhausted_day, reason FROM key_model_state")}
        self.pool.load(key_states, model_states)
        self.pool.learned.load(
            await self.db.fetchall("SELECT key_fp, model, per_day, per_minute, tokens_per_minute, learned_at "
                                   "FROM key_learned_limit"),
            await self.db.fetchall("SELECT key_fp, project FROM key_project"))
        self.limits.load(day, {ip: n for ip, n in await self.db.fetchall(
            "SELECT ip, requests FROM client_usage WHERE day = ?", (day,))})
        newest = [t for t, in await self.db.fetchall(
            "SELECT MAX(ts) FROM request_log UNION ALL SELECT MAX(ts) FROM audit") if t is not None]
        self._seen = max(newest) if newest else None
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

    async def flush(self) -> int:
        """Write everything that changed, in one transaction. Returns the number of rows written.
        When it returns, everything changed before the call is on disk."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> int:
        self.pool.check_day()  # a new quota day starts counting from 0 even when no request comes
        usage = self.usage.drain()
        keys, models = self.pool.drain_states()
        learned, projects = self.pool.learned.drain()
        clients = self.limits.drain()
        requests = self.requests.drain()
        audit = self.audit.drain() if self.audit is not None else []
        client_key_rows = self.client_keys.drain() if self.client_keys is not None else []
        usage_rows = [(day, fp, model, u.requests, u.successes, u.failures, u.prompt_tokens, u.completion_tokens)
                      for day, fp, model, u in usage]
        failure_rows = [(day, fp, model, kind, n) for day, fp, model, u in usage for kind, n in u.failure_kinds.items()]
        request_rows = [r.as_tuple() for r in requests]
        daily_rows = self._daily(requests)
        total = len(usage_rows) + len(failure_rows) + len(keys) + len(models) + len(learned) + len(projects) + \
            len(clients) + len(request_rows) + \
            len(audit) + len(client_key_rows)
        if not total:
            return 0
        try:
            await self.db.write([(UPSERT_USAGE, usage_rows), (UPSERT_FAILURES, failure_rows),
                                 (UPSERT_KEY_STATE, keys), (UPSERT_MODEL_STATE, models),
                                 (UPSERT_LEARNED, learned), (UPSERT_PROJECT, projects),
                                 (UPSERT_CLIENT, clients), (INSERT_REQUEST, request_rows),
                                 (ADD_DAILY, daily_rows), (INSERT_AUDIT, audit),
                                 (UPSERT_CLIENT_KEY_USAGE, client_key_rows)])
        except BaseException:
            self.usage.restore(usage)
            self.pool.restore_states(keys, models)
            self.pool.learned.restore(learned, projects)
            self.limits.restore(clients)
            self.requests.restore(requests)
            if self.audit is not None:
                self.audit.restore(audit)
            if self.client_keys is not None:
                self.client_keys.restore(client_key_rows)
            self.failed_flushes += 1
            raise
        self.flushes += 1
        self.rows_since_prune += len(request_rows)
        return total

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
        await self.db.write([
            ("DELETE FROM request_log WHERE ts < ?", [(cutoff,)]),
            ("DELETE FROM request_log WHERE id <= (SELECT id FROM request_log ORDER BY id DESC LIMIT 1 OFFSET ?)",
             [(s.REQUEST_LOG_MAX_ROWS,)]),
            ("DELETE FROM client_usage WHERE day < ?", [(self.day_of()(cutoff),)]),
            ("DELETE FROM request_daily WHERE day < ?", [(self.day_of()(trusted - DAILY_DAYS * 86400),)]),
            # client keys' usage: what the dashboard's history shows (30 days), kept as long as the daily totals
            ("DELETE FROM client_key_usage WHERE day < ?", [(self.day_of()(trusted - DAILY_DAYS * 86400),)]),
            ("DELETE FROM admin_session WHERE expires_at < ?", [(now,)]),
            ("DELETE FROM chat_session WHERE expires_at < ?", [(now,)]),
            ("DELETE FROM audit WHERE ts < ?", [(trusted - DAILY_DAYS * 86400,)]),
            ("DELETE FROM key_model_state WHERE (exhausted_day IS NULL OR exhausted_day < ?) "
             "AND (cooldown_until IS NULL OR cooldown_until < ?)", [(self.pool.quota_day.today(), now)]),
            ("DELETE FROM key_learned_limit WHERE learned_at < ?", [(trusted - LEARNED_TTL,)]),
        ])
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
            await self.flush()
            if self.prune_due():
                await self.prune()
        except Exception:
            log.exception("writing counters to the database failed; will try again")

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
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        await self.flush()
