"""The key pool: which keys exist, what state each is in, and which one serves the next attempt.

The pool owns every key's state (disabled, backing off after 5xx, cooling down or
exhausted per model) and, through `UsageCounters`, today's counts. Selection picks,
among keys usable for the model, the one with the fewest requests today, round-robin
among equals. Keys are kept per model in levels by count, so a pick looks at the
least-used level first and costs the same whatever the request history; keys parked
for the day (exhausted, disabled) are out of the levels altogether.

Keys are held as `Key` objects whose repr and str are masked; the secret is read
only where a request is sent upstream.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from ..clock import Clock
from ..keyshapes import valid_key_text
from ..redact import fingerprint, mask
from ..upstream.failures import QuotaExceeded, UpstreamFailure
from .learned import MINUTE, LearnedLimits, RecentCalls, mask_project
from .quota import DailyLimits, MemoryUsage, QuotaDay

BACKOFF_BASE = 1.0        # seconds after the first 5xx/timeout in a row; doubles with each one after
BACKOFF_MAX = 30.0
MINUTE_COOLDOWN = 60.0    # a per-minute 429 without RetryInfo
NEAR_LIMIT = 4            # shared store: reconcile at once when what this process counted since its last read
                          # reaches a quarter of the room the cluster had left under a daily limit


@dataclass(eq=False)
class ModelState:
    cooldown_until: float = 0.0
    exhausted_day: str | None = None
    reason: str | None = None


@dataclass(eq=False)
class Key:
    secret: str = field(repr=False)
    fp: str = ""
    masked: str = ""
    disabled_reason: str | None = None
    disabled_at: float | None = None
    backoff_until: float = 0.0
    backoff_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    source: str = "environment"   # environment, dashboard (stored in SQLite), demo or a providers file
    provider: str = "gemini"      # which upstream this credential belongs to (gemini, vertex, or a name)
    models: dict[str, ModelState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fp = self.fp or fingerprint(self.secret)
        self.masked = self.masked or mask(self.secret)

    def __repr__(self) -> str:
        return f"Key({self.masked}, {self.fp})"

    __str__ = __repr__

    @property
    def usable(self) -> bool:
        return self.disabled_reason is None


class _Rotation:
    """The keys in play for one model, grouped by today's request count (insertion order within a level)."""

    __slots__ = ("levels", "level_of")

    def __init__(self) -> None:
        self.levels: dict[int, dict[str, Key]] = {}
        self.level_of: dict[str, int] = {}

    def put(self, key: Key, level: int) -> None:
        self.remove(key.fp)
        self.levels.setdefault(level, {})[key.fp] = key
        self.level_of[key.fp] = level

    def remove(self, fp: str) -> None:
        level = self.level_of.pop(fp, None)
        if level is not None:
            keys = self.levels[level]
            del keys[fp]
            if not keys:
                del self.levels[level]

    def ordered(self) -> Iterator[tuple[int, Key]]:
        for level in sorted(self.levels):
            for key in self.levels[level].values():
                yield level, key


@dataclass(frozen=True)
class Unavailable:
    """Why no key can serve a model now, and when one can."""

    retry_at: float      # epoch seconds; math.inf when no key will (all disabled, none configured)
    retry_after: float   # seconds from when this was computed
    quota: bool          # quotas or limits keep the keys out (429), not only transient back-off (503)
    next_day: bool       # the earliest key frees up only with the next quota day
    detail: str
    pacing: bool = False  # only KEY_MIN_INTERVAL_MS keeps the first key out: waiting is the point


class KeyPool:
    def __init__(self, secrets: Iterable[str], clock: Clock, quota_day: QuotaDay, limits: DailyLimits,
                 usage: MemoryUsage | None = None, display_tz: str = "UTC"):
        self.clock = clock
        self.quota_day = quota_day
        self.limits = limits
        self.usage = usage or MemoryUsage(quota_day.today())
        self.display_zone = ZoneInfo(display_tz)
        self.keys: list[Key] = []
        self._by_fp: dict[str, Key] = {}
        self.rejected = 0  # configured values that cannot be keys (never logged)
        self.day = self.quota_day.today()
        if not self.usage.day:
            self.usage.day = self.day
        self._rot: dict[tuple[str, str], _Rotation] = {}  # (provider, model) → rotation
        self._dirty_keys: set[str] = set()
        self._dirty_disabled: set[str] = set()  # keys this process disabled or enabled since the last drain
        self._dirty_models: set[tuple[str, str]] = set()
        self.learned = LearnedLimits()   # limits and projects Google named (pool/learned.py)
        self.recent = RecentCalls()      # last calls per key × model: pacing and learned per-minute limits
        self.pacing: Callable[[], float] = lambda: 0.0  # KEY_MIN_INTERVAL_MS in seconds (set by the app)
        # called as on_event("key_disabled", key, reason) after Keyloom takes a key out (server/ops.py: alerts)
        self.on_event: Callable[[str, Key, str], None] | None = None
        # called when a key leaves play or returns (disabled, enabled, cooling, exhausted, reset): a store shared
        # by several processes tells the others at once instead of at the next flush tick
        self.on_change: Callable[[], None] | None = None
        # called when this process's unwritten count of a key × model reaches a quarter of the room left under its
        # daily limit (as last read): a shared store reconciles at once instead of at the tick, so the closer the
        # cluster gets to a limit, the fresher the counts it decides from (the room shrinks, so do the steps)
        self.on_near_limit: Callable[[], None] | None = None
        for s in secrets:
            self.add(s)

    # -- membership ------------------------------------------------------------------------------

    def add(self, secret: str, source: str = "environment", provider: str = "gemini") -> Key | None:
        if not valid_key_text(secret):
            self.rejected += 1
            return None
        return self.add_key(Key(secret, source=source, provider=provider))

    def add_key(self, key: Key) -> Key:
        """A credential built by its provider (service accounts, keyless local upstreams)."""
        if key.fp in self._by_fp:
            return self._by_fp[key.fp]
        self.keys.append(key)
        self._by_fp[key.fp] = key
        self._rot.clear()
        return key

    def remove(self, fp: str) -> Key | None:
        """Out of the pool at once (today's counts stay in the history)."""
        key = self._by_fp.pop(fp, None)
        if key is not None:
            self.keys.remove(key)
            self._rot.clear()
        return key

    def reset_today(self, key: Key) -> None:
        """Today's counters for this key back to zero, and its per-model cool-downs and exhaustion
        lifted: the owner says "use it again today"."""
        self.usage.reset(key.fp)
        for model, ms in key.models.items():
            ms.cooldown_until, ms.exhausted_day, ms.reason = 0.0, None, None
            self._dirty_models.add((key.fp, model))
        key.backoff_failures, key.backoff_until = 0, 0.0
        self.learned.forget(key.fp)
        self._dirty_keys.add(key.fp)
        self._rot.clear()
        self._changed()

    def has(self, provider: str) -> bool:
        return any(k.provider == provider for k in self.keys)

    def get(self, fp: str) -> Key | None:
        return self._by_fp.get(fp)

    def secrets(self) -> list[str]:
        return [k.secret for k in self.keys]

    # -- the quota day -----------------------------------------------------------------------------

    def check_day(self) -> str:
        """Roll over to a new quota day when one has begun (called on each pick and each flush tick)."""
        day = self.quota_day.today()
        if day != self.day:
            self.day = day
            self.usage.roll(day)
            self._rot.clear()  # rebuilt from today's (empty) counts; yesterday's exhaustion no longer applies
        return day

    def _rotation(self, model: str, provider: str) -> _Rotation:
        rot = self._rot.get((provider, model))
        if rot is None:
            rot = self._rot[(provider, model)] = _Rotation()
            for key in self.keys:
                ms = key.models.get(model)
                if key.provider == provider and key.usable and not (ms is not None and ms.exhausted_day == self.day):
                    rot.put(key, self.usage.requests(key.fp, model))
        return rot

    # -- selection -------------------------------------------------------------------------------

    def _ready(self, key: Key, model: str, now: float) -> bool:
        if key.backoff_until > now:
            return False
        ms = key.models.get(model)
        return ms is None or ms.cooldown_until <= now

    def _group(self, fp: str) -> set[str]:
        """The key and the other keys of its Google Cloud project: they share its quotas."""
        return self.learned.peers(fp) | {fp}

    def held(self, key: Key, model: str, now: float) -> tuple[str, float] | None:
        """Why a key its state allows must still not take `model` now, and until when: "day" (its project's
        requests today reached the daily limit Google named), "minute" (its project's calls of the last minute
        reached the per-minute limit Google named) or "pacing" (its last call on the model is more recent than
        KEY_MIN_INTERVAL_MS). None: it may go."""
        learned = self.learned.get(key.fp, model, now)
        if learned is not None:
            if learned.per_day is not None:
                group = self._group(key.fp)
                used = sum(self.usage.requests(fp, model) for fp in group)
                if used >= learned.per_day:
                    return "day", self.quota_day.next_reset()
            if learned.per_minute is not None:
                if learned.per_minute <= 0:
                    return "day", self.quota_day.next_reset()  # "limit: 0": this tier has no such model
                times = sorted(t for fp in self._group(key.fp) for t in self.recent.in_last_minute(fp, model, now))
                if len(times) >= learned.per_minute:
                    return "minute", times[len(times) - learned.per_minute] + MINUTE
        gap = self.pacing()
        if gap > 0:
            last = self.recent.last.get((key.fp, model))
            if last is not None and now - last < gap:
                return "pacing", last + gap
        return None

    def _take(self, key: Key, model: str, rot: _Rotation, level: int, now: float, limit: int) -> Key:
        """Reserve the key for one call: counted now, and remembered for pacing and per-minute limits."""
        self.usage.add(key.fp, model, requests=1)
        if limit and self.on_near_limit is not None:
            unsynced = self.usage.unsynced(key.fp, model)
            if unsynced * NEAR_LIMIT >= limit - (level + 1 - unsynced):
                self.on_near_limit()
        rot.put(key, level + 1)  # to the back of the next level: round-robin among equals
        learned = self.learned.get(key.fp, model, now)
        self.recent.add(key.fp, model, now, learned is not None and learned.per_minute is not None)
        return key

    def pick(self, model: str, avoid: Iterable[str] = (), provider: str = "gemini",
             prefer: str | None = None) -> Key | None:
        """The least-used key ready for `model` (not in `avoid`), reserved: its request is counted now,
        so concurrent requests spread over keys and a daily limit cannot be overshot. `prefer`: a key's
        fingerprint to take first when it is ready (the key that issued the thought signatures a request
        carries back)."""
        self.check_day()
        now = self.clock.time()
        limit = self.limits.for_model(model, provider)
        rot = self._rotation(model, provider)
        if prefer is not None and prefer not in avoid:
            level = rot.level_of.get(prefer)
            key = self._by_fp.get(prefer)
            if key is not None and level is not None and (not limit or level < limit) and \
                    self._ready(key, model, now) and self.held(key, model, now) is None:
                return self._take(key, model, rot, level, now, limit)
        for level, key in rot.ordered():
            if limit and level >= limit:
                break  # this level and every one after it is at the daily limit
            if key.fp in avoid or not self._ready(key, model, now) or self.held(key, model, now) is not None:
                continue
            return self._take(key, model, rot, level, now, limit)  # ends the iteration before the levels change
        return None

    def release(self, key: Key, model: str) -> None:
        """The reserved request never reached Google (the connection failed): take the count back."""
        if self.usage.day != self.day or self.usage.requests(key.fp, model) <= 0:
            return
        self.usage.add(key.fp, model, requests=-1)
        self.recent.take_back(key.fp, model)
        rot = self._rot.get((key.provider, model))
        if rot is not None and key.fp in rot.level_of:
            rot.put(key, self.usage.requests(key.fp, model))

    # -- outcomes --------------------------------------------------------------------------------

    def success(self, key: Key, model: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.usage.add(key.fp, model, successes=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        if key.backoff_failures or key.backoff_until:
            key.backoff_failures = 0
            key.backoff_until = 0.0
            self._dirty_keys.add(key.fp)

    def note_error(self, key: Key, message: str, now: float | None = None) -> None:
        key.last_error = message
        key.last_error_at = self.clock.time() if now is None else now
        self._dirty_keys.add(key.fp)

    def failure(self, key: Key, model: str, kind: str, message: str) -> None:
        """Count a failed attempt (no change of state)."""
        self.usage.add(key.fp, model, failure=kind)
        self.note_error(key, message)

    def learn(self, key: Key, model: str, failure: UpstreamFailure) -> None:
        """What an error body says beyond its verdict: the key's project (a new member takes on what its
        project learned and is parked where the project is), and the limits a 429 names."""
        if failure.project and self.learned.set_project(key.fp, failure.project):
            day = self.check_day()
            for fp in self.learned.peers(key.fp):
                peer = self._by_fp.get(fp)
                for m, ms in list(peer.models.items()) if peer is not None else ():
                    if ms.exhausted_day == day:
                        self._park(key, m, day, f"project {mask_project(failure.project)}: {ms.reason or ''}")
        if isinstance(failure, QuotaExceeded) and failure.violations and model:
            self.learned.learn(key.fp, model, failure.violations, self.clock.time())

    def _park(self, key: Key, model: str, day: str, reason: str) -> None:
        ms = key.models.setdefault(model, ModelState())
        if ms.exhausted_day == day:
            return
        ms.exhausted_day, ms.reason = day, reason
        self._dirty_models.add((key.fp, model))
        rot = self._rot.get((key.provider, model))
        if rot is not None:
            rot.remove(key.fp)

    def disable(self, key: Key, reason: str) -> None:
        if key.disabled_reason is not None:
            return
        key.disabled_reason = reason
        key.disabled_at = self.clock.time()
        self._dirty_keys.add(key.fp)
        self._dirty_disabled.add(key.fp)
        for rot in self._rot.values():
            rot.remove(key.fp)
        self._changed()
        if self.on_event is not None:
            self.on_event("key_disabled", key, reason)

    def enable(self, key: Key) -> None:
        key.disabled_reason = None
        key.disabled_at = None
        key.backoff_failures = 0
        key.backoff_until = 0.0
        self._dirty_keys.add(key.fp)
        self._dirty_disabled.add(key.fp)
        self._rot.clear()
        self._changed()

    def back_off(self, key: Key) -> float:
        """A transient failure (5xx, timeout): rest the key a little, longer each time in a row."""
        key.backoff_failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (key.backoff_failures - 1))
        key.backoff_until = self.clock.time() + delay
        self._dirty_keys.add(key.fp)
        return delay

    def cool_down(self, key: Key, model: str, seconds: float | None, reason: str) -> None:
        """A per-minute quota ran out: not this key for this model for a while."""
        until = self.clock.time() + (seconds if seconds and seconds > 0 else MINUTE_COOLDOWN)
        for k in [key, *(self._by_fp[fp] for fp in self.learned.peers(key.fp) if fp in self._by_fp)]:
            ms = k.models.setdefault(model, ModelState())  # the project's keys share its per-minute quota
            if ms.cooldown_until < until:
                ms.cooldown_until = until
                ms.reason = reason
                self._dirty_models.add((k.fp, model))
        self._changed()

    def exhaust(self, key: Key, model: str, reason: str) -> None:
        """A per-day quota ran out: not this key for this model until the quota day ends, nor any other key
        of its Google Cloud project (they share the quota)."""
        day = self.check_day()
        ms = key.models.setdefault(model, ModelState())
        ms.exhausted_day = day
        ms.reason = reason
        self._dirty_models.add((key.fp, model))
        rot = self._rot.get((key.provider, model))
        if rot is not None:
            rot.remove(key.fp)
        project = self.learned.project_of(key.fp)
        for fp in self.learned.peers(key.fp):
            peer = self._by_fp.get(fp)
            if peer is not None and peer.provider == key.provider:
                self._park(peer, model, day, f"project {mask_project(project or '')}: daily quota ran out on key "
                                             f"{key.masked}")
        self._changed()

    # -- when nothing is available ---------------------------------------------------------------

    def unavailable(self, model: str, avoid: Iterable[str] = (), provider: str = "gemini") -> Unavailable:
        day = self.check_day()
        now = self.clock.time()
        limit = self.limits.for_model(model, provider)
        reset = self.quota_day.next_reset()
        avoid = set(avoid)
        best = math.inf
        best_quota = False
        live = exhausted = at_limit = cooling = backing_off = learned_day = learned_minute = pacing = 0
        best_pacing = False
        keys = [k for k in self.keys if k.provider == provider]
        for key in keys:
            if not key.usable or key.fp in avoid:  # avoided: out for the rest of this request
                continue
            live += 1
            ms = key.models.get(model)
            if ms is not None and ms.exhausted_day == day:
                exhausted += 1
                t, quota = reset, True
            elif limit and self.usage.requests(key.fp, model) >= limit:
                at_limit += 1
                t, quota = reset, True
            else:
                cool = ms.cooldown_until if ms is not None else 0.0
                t = max(now, key.backoff_until, cool)
                quota = cool > now
                cooling += cool > now
                backing_off += key.backoff_until > now
                held = self.held(key, model, t)
                if held is not None:
                    why, until = held
                    t = max(t, until)
                    if why == "pacing":
                        pacing += 1
                    else:
                        quota = True
                        learned_day += why == "day"
                        learned_minute += why == "minute"
            paced = not quota and t > now and t > key.backoff_until
            if t < best or (t == best and quota and not best_quota):
                best, best_quota, best_pacing = t, quota, paced
        if not keys:
            return Unavailable(math.inf, math.inf, False, False, "no key is configured (set GEMINI_API_KEYS)"
                               if provider == "gemini" else f"no credential is configured for {provider}")
        if live == 0:
            disabled = sum(1 for k in keys if not k.usable)
            why = f"all {len(keys)} keys are disabled" if disabled == len(keys) else \
                f"{disabled} of {len(keys)} keys are disabled and the others were refused for this request"
            return Unavailable(math.inf, math.inf, False, False, why)
        parts = []
        if at_limit:
            parts.append(f"{at_limit} at the daily limit of {limit}")
        if exhausted:
            parts.append(f"{exhausted} out of Google's daily quota")
        if learned_day:
            parts.append(f"{learned_day} at the daily limit Google named")
        if learned_minute:
            parts.append(f"{learned_minute} at the per-minute limit Google named")
        if pacing:
            parts.append(f"{pacing} pacing (KEY_MIN_INTERVAL_MS)")
        if cooling:
            parts.append(f"{cooling} cooling down after a per-minute quota")
        if backing_off:
            parts.append(f"{backing_off} resting after upstream errors")
        when = datetime.fromtimestamp(best, self.display_zone).strftime("%Y-%m-%d %H:%M:%S %Z")
        detail = f"{model}: of {live} usable keys, " + ", ".join(parts or ["none is free"]) + \
                 f"; the first frees up at {when}"
        return Unavailable(best, best - now, best_quota, best >= reset, detail,
                           pacing=best_pacing and not best_quota)

    # -- persistence -----------------------------------------------------------------------------

    def load(self, key_states: dict[str, tuple], model_states: dict[tuple[str, str], tuple]) -> None:
        """States read back at start-up, for the keys configured now (others are ignored)."""
        for fp, (reason, disabled_at, backoff_until, backoff_failures, last_error, last_error_at) in key_states.items():
            key = self._by_fp.get(fp)
            if key is None:
                continue
            key.disabled_reason, key.disabled_at = reason, disabled_at
            key.backoff_until, key.backoff_failures = backoff_until or 0.0, backoff_failures or 0
            key.last_error, key.last_error_at = last_error, last_error_at
        for (fp, model), (cooldown_until, exhausted_day, reason) in model_states.items():
            key = self._by_fp.get(fp)
            if key is not None:
                key.models[model] = ModelState(cooldown_until or 0.0, exhausted_day, reason)
        self._rot.clear()

    def counts_changed(self) -> None:
        """Today's counts or states were replaced by the cluster's (a shared store's read-back): the rotations
        are rebuilt from them at the next pick."""
        self._rot.clear()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def apply_states(self, key_states: dict[str, tuple], model_states: dict[tuple[str, str], tuple]) -> None:
        """States another process wrote (a shared store read them back): they replace ours, field by field, except
        where this process changed one it has not written yet (its write comes later, and wins): whether a key is
        disabled is taken unless this process disabled or enabled it; its health (back-off, last error) unless
        this process changed that."""
        for fp, (reason, at, backoff_until, backoff_failures, last_error, last_error_at) in key_states.items():
            key = self._by_fp.get(fp)
            if key is None:
                continue
            if fp not in self._dirty_disabled:
                key.disabled_reason, key.disabled_at = reason, at
            if fp not in self._dirty_keys:
                key.backoff_until, key.backoff_failures = backoff_until or 0.0, backoff_failures or 0
                key.last_error, key.last_error_at = last_error, last_error_at
        for key in self.keys:  # a state gone from the store (pruned, reset elsewhere) is gone here too
            for model in [m for m in key.models if (key.fp, m) not in model_states
                          and (key.fp, m) not in self._dirty_models]:
                del key.models[model]
        for (fp, model), (cooldown_until, exhausted_day, reason) in model_states.items():
            key = self._by_fp.get(fp)
            if key is not None and (fp, model) not in self._dirty_models:
                key.models[model] = ModelState(cooldown_until or 0.0, exhausted_day, reason)
        self._rot.clear()

    def drain_disabled(self) -> list[str]:
        """The keys this process disabled or enabled since the last drain (a shared store writes whether a key is
        disabled only for these, so one process's note of an error never undoes another's disabling)."""
        out = list(self._dirty_disabled)
        self._dirty_disabled.clear()
        return out

    def drain_states(self) -> tuple[list[tuple], list[tuple]]:
        """Rows for key_state and key_model_state that changed since the last drain."""
        keys = []
        for fp in self._dirty_keys:
            k = self._by_fp.get(fp)
            if k is not None:
                keys.append((fp, k.disabled_reason, k.disabled_at, k.backoff_until or None, k.backoff_failures,
                             k.last_error, k.last_error_at))
        models = []
        for fp, model in self._dirty_models:
            k = self._by_fp.get(fp)
            ms = k.models.get(model) if k is not None else None
            if ms is not None:
                models.append((fp, model, ms.cooldown_until or None, ms.exhausted_day, ms.reason))
        self._dirty_keys.clear()
        self._dirty_models.clear()
        return keys, models

    def state(self, key: Key) -> tuple[str, float | None, str | None]:
        """(state, until, why) of a key as a whole: disabled, resting (after upstream errors),
        cooling (some model, per-minute quota), exhausted (some model, for the day) or active."""
        now = self.clock.time()
        if key.disabled_reason is not None:
            return "disabled", None, key.disabled_reason
        if key.backoff_until > now:
            return "resting", key.backoff_until, key.last_error
        cooling = [(ms.cooldown_until, m) for m, ms in key.models.items() if ms.cooldown_until > now]
        if cooling:
            until, model = max(cooling)
            return "cooling", until, model
        exhausted = sorted(m for m, ms in key.models.items() if ms.exhausted_day == self.day)
        if exhausted:
            return "exhausted", self.quota_day.next_reset(), ", ".join(exhausted)
        return "active", None, None

    def model_state(self, key: Key, model: str) -> tuple[str, float | None]:
        now = self.clock.time()
        ms = key.models.get(model)
        if ms is None:
            return "active", None
        if ms.exhausted_day == self.day:
            return "exhausted", self.quota_day.next_reset()
        if ms.cooldown_until > now:
            return "cooling", ms.cooldown_until
        return "active", None

    def counts(self) -> dict[str, int]:
        disabled = sum(1 for k in self.keys if not k.usable)
        return {"total": len(self.keys), "active": len(self.keys) - disabled, "disabled": disabled}
