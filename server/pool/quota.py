"""Quota days, daily limits, and the per-key per-model usage counters.

Google counts free quotas per key (project) and per model, and resets them at
midnight Pacific time. The quota day here follows QUOTA_RESET_TZ, independent of
the display time zone. Counters live in memory on the request path; `UsageCounters`
is the one interface the pool uses, so a shared store (Redis, for several replicas)
can replace `MemoryUsage` without touching the request path.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Protocol
from zoneinfo import ZoneInfo

from ..clock import Clock
from ..settings import Settings


class QuotaDay:
    """Which quota day it is, and when the next one starts. O(1) per call: the day's bounds are cached."""

    def __init__(self, clock: Clock, tz: str):
        self.clock = clock
        self.zone = ZoneInfo(tz)
        self._day = ""
        self._start = 0.0
        self._end = -1.0

    def _compute(self, now: float) -> None:
        local = datetime.fromtimestamp(now, self.zone)
        day = local.date()
        start = datetime.combine(day, dtime(0), self.zone)
        end = datetime.combine(day + timedelta(days=1), dtime(0), self.zone)
        self._day, self._start, self._end = day.isoformat(), start.timestamp(), end.timestamp()

    def today(self) -> str:
        now = self.clock.time()
        if not (self._start <= now < self._end):
            self._compute(now)
        return self._day

    def next_reset(self) -> float:
        self.today()
        return self._end


class DailyLimits:
    """Gemini API keys: API_KEY_DAILY_LIMIT, overridden per model by MODEL_DAILY_LIMITS, read live from the
    settings. Other providers: their own per-key limit (`per_provider`; none for Vertex, which is paid)."""

    def __init__(self, settings: Callable[[], Settings], per_provider: dict[str, int] | None = None):
        self.settings = settings
        self.per_provider = per_provider if per_provider is not None else {}
        self._for: Settings | None = None    # the settings the cache below was made from
        self._cache: dict[str, int] = {}

    def for_model(self, model: str, provider: str = "gemini") -> int:
        """0 means no limit. MODEL_DAILY_LIMITS names models or glob patterns (the exact name first, then the
        first matching pattern); results are cached per settings object, so a pick costs one dict lookup."""
        if provider != "gemini":
            return self.per_provider.get(provider, 0)
        s = self.settings()
        if s is not self._for:
            self._for, self._cache = s, {}
        limit = self._cache.get(model)
        if limit is None:
            limits = s.MODEL_DAILY_LIMITS
            limit = limits.get(model)
            if limit is None:
                limit = next((n for pattern, n in limits.items() if fnmatch.fnmatchcase(model, pattern)),
                             s.API_KEY_DAILY_LIMIT)
            if len(self._cache) < 4096:  # model ids come from clients: keep it bounded
                self._cache[model] = limit
        return limit


@dataclass
class Usage:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)

    def copy(self) -> Usage:
        return Usage(self.requests, self.successes, self.failures, self.prompt_tokens, self.completion_tokens,
                     dict(self.failure_kinds))


class UsageCounters(Protocol):
    """Per key × model counters for the current quota day, as the request path reads and adds to them."""

    day: str

    def requests(self, key_fp: str, model: str) -> int: ...

    def add(self, key_fp: str, model: str, *, requests: int = 0, successes: int = 0, failure: str | None = None,
            prompt_tokens: int = 0, completion_tokens: int = 0) -> None: ...

    def roll(self, day: str) -> None: ...


def _plus(into: Usage, d: Usage) -> None:
    into.requests += d.requests
    into.successes += d.successes
    into.failures += d.failures
    into.prompt_tokens += d.prompt_tokens
    into.completion_tokens += d.completion_tokens
    for kind, n in d.failure_kinds.items():
        into.failure_kinds[kind] = into.failure_kinds.get(kind, 0) + n


class MemoryUsage:
    """Today's counters in memory: `rows` are the totals this process decides from (the store's, as last read
    back, plus what it added since), `_delta` what it added since the last drain. The flusher hands the deltas
    to the store (server/store/counters.py), which adds them up; with a store several processes share, the
    totals it reads back replace `rows` (`settle`), keeping what was added while the write was under way."""

    def __init__(self, day: str = ""):
        self.day = day
        self.rows: dict[tuple[str, str], Usage] = {}
        self._delta: dict[tuple[str, str], Usage] = {}
        self._pending: list[tuple[str, str, str, Usage]] = []  # deltas of a finished day not yet written

    def requests(self, key_fp: str, model: str) -> int:
        u = self.rows.get((key_fp, model))
        return u.requests if u is not None else 0

    def get(self, key_fp: str, model: str) -> Usage | None:
        return self.rows.get((key_fp, model))

    def unsynced(self, key_fp: str, model: str) -> int:
        """Requests counted here since the last drain (not yet in the store's totals)."""
        d = self._delta.get((key_fp, model))
        return d.requests if d is not None else 0

    def add(self, key_fp: str, model: str, *, requests: int = 0, successes: int = 0, failure: str | None = None,
            prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        k = (key_fp, model)
        for table in (self.rows, self._delta):
            u = table.get(k)
            if u is None:
                u = table[k] = Usage()
            u.requests += requests
            u.successes += successes
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            if failure is not None:
                u.failures += 1
                u.failure_kinds[failure] = u.failure_kinds.get(failure, 0) + 1

    def reset(self, key_fp: str) -> None:
        """The owner reset a key for today: its counts go to 0 here (the store is told by the caller)."""
        for k in [k for k in self.rows if k[0] == key_fp]:
            self.rows[k] = Usage()
        for k in [k for k in self._delta if k[0] == key_fp]:
            del self._delta[k]

    def roll(self, day: str) -> None:
        """A new quota day: yesterday's unwritten deltas wait for the next flush; counting starts at 0."""
        self._pending.extend((self.day, fp, model, u) for (fp, model), u in self._delta.items())
        self._delta = {}
        self.rows = {}
        self.day = day

    def load(self, day: str, rows: dict[tuple[str, str], Usage]) -> None:
        self.day = day
        self.rows = rows
        self._delta = {}

    def drain(self) -> list[tuple[str, str, str, Usage]]:
        """(day, key_fp, model, delta) for everything added since the last drain."""
        out = self._pending
        self._pending = []
        out.extend((self.day, fp, model, u) for (fp, model), u in self._delta.items())
        self._delta = {}
        return out

    def settle(self, day: str, totals: dict[tuple[str, str], Usage]) -> bool:
        """Totals a shared store read back after a write: they become `rows`, plus what this process added since
        the drain (not yet in them). → whether any request count changed (the pool rebuilds its rotations)."""
        if day != self.day:
            return False
        rows: dict[tuple[str, str], Usage] = {}
        changed = False
        for k, total in totals.items():
            u = total.copy()
            d = self._delta.get(k)
            if d is not None:
                _plus(u, d)
            old = self.rows.get(k)
            changed = changed or old is None or old.requests != u.requests
            rows[k] = u
        for k, d in self._delta.items():
            if k not in rows:
                rows[k] = d.copy()
        changed = changed or len(rows) != len(self.rows)
        self.rows = rows
        return changed
