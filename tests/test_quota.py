"""Quota days, counters and key selection, with an injected clock (no sleeping)."""
from __future__ import annotations

import collections
import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from server.clock import ManualClock
from server.pool.keys import BACKOFF_MAX, KeyPool
from server.pool.quota import DailyLimits, MemoryUsage, QuotaDay, Usage
from server.settings import Settings
from tests.conftest import KEYS, make_key

LA = ZoneInfo("America/Los_Angeles")


def at(text: str, zone=LA) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def make_pool(clock, keys=KEYS, **env):
    settings = Settings.from_env({"API_KEY_DAILY_LIMIT": "0", **env})
    return KeyPool(keys, clock, QuotaDay(clock, settings.QUOTA_RESET_TZ), DailyLimits(lambda: settings))


# -- the quota day -------------------------------------------------------------------------------

def test_quota_day_turns_at_midnight_pacific_not_in_the_display_zone():
    clock = ManualClock(at("2026-03-10 23:59:59"))
    day = QuotaDay(clock, "America/Los_Angeles")
    assert day.today() == "2026-03-10"
    assert day.next_reset() == at("2026-03-11 00:00:00")
    clock.advance(1)
    assert day.today() == "2026-03-11"
    # 16:00 in Shanghai is still the previous day in Los Angeles
    clock2 = ManualClock(at("2026-03-12 06:00:00", ZoneInfo("Asia/Shanghai")))
    assert QuotaDay(clock2, "America/Los_Angeles").today() == "2026-03-11"


def test_quota_day_across_daylight_saving_changes():
    clock = ManualClock(at("2026-03-08 00:30:00"))  # the US spring-forward day has 23 hours
    day = QuotaDay(clock, "America/Los_Angeles")
    assert day.next_reset() - at("2026-03-08 00:00:00") == 23 * 3600
    clock = ManualClock(at("2026-11-01 12:00:00"))  # the fall-back day has 25 hours
    day = QuotaDay(clock, "America/Los_Angeles")
    assert day.next_reset() - at("2026-11-01 00:00:00") == 25 * 3600


# -- counters ------------------------------------------------------------------------------------

def test_memory_usage_drains_deltas_rolls_restores_and_settles():
    u = MemoryUsage("2026-01-01")
    u.add("k1", "m", requests=1)
    u.add("k1", "m", successes=1, prompt_tokens=5, completion_tokens=7)
    u.add("k2", "m", requests=1, failure="Overloaded")
    rows = {(fp, m): x for _, fp, m, x in u.drain()}
    assert rows[("k1", "m")].requests == 1 and rows[("k1", "m")].completion_tokens == 7
    assert rows[("k2", "m")].failure_kinds == {"Overloaded": 1}
    assert u.drain() == []  # nothing changed since
    u.add("k1", "m", requests=1)
    assert u.requests("k1", "m") == 2  # the total this process decides from
    u.roll("2026-01-02")  # the unwritten change of the old day still gets written, with the old day
    assert u.requests("k1", "m") == 0
    u.add("k1", "m", requests=1)
    drained = sorted((d, fp, x.requests) for d, fp, _, x in u.drain())
    assert drained == [("2026-01-01", "k1", 1), ("2026-01-02", "k1", 1)]  # what was added, not totals
    assert u.drain() == []
    # a shared store's totals (others counted 5 more) replace the rows, keeping what was added since the drain
    u.add("k1", "m", requests=1)
    assert u.settle("2026-01-02", {("k1", "m"): Usage(requests=6), ("k3", "m"): Usage(requests=2)})
    assert (u.requests("k1", "m"), u.requests("k3", "m")) == (7, 2)
    assert [(r[1], r[3].requests) for r in u.drain()] == [("k1", 1)]
    assert not u.settle("2026-01-01", {("k1", "m"): Usage(requests=99)})  # another day's totals change nothing
    assert u.requests("k1", "m") == 7


# -- selection -----------------------------------------------------------------------------------

def test_least_used_selection_spreads_300_requests_evenly_per_model():
    clock = ManualClock()
    pool = make_pool(clock)
    used = collections.Counter()
    for i in range(300):
        model = ("gemini-2.5-flash", "gemini-2.5-pro")[i % 2]
        used[(pool.pick(model).fp, model)] += 1
    for model in ("gemini-2.5-flash", "gemini-2.5-pro"):
        counts = [used[(k.fp, model)] for k in pool.keys]
        assert max(counts) - min(counts) <= 1 and sum(counts) == 150


def test_selection_prefers_the_key_with_fewest_requests_today_after_a_restart():
    clock = ManualClock()
    usage = MemoryUsage()
    settings = Settings.from_env({"API_KEY_DAILY_LIMIT": "0"})
    qd = QuotaDay(clock, "America/Los_Angeles")
    pool = KeyPool(KEYS, clock, qd, DailyLimits(lambda: settings), usage)
    a, b, c = pool.keys
    usage.load(qd.today(), {})
    for fp, n in ((a.fp, 5), (b.fp, 2), (c.fp, 9)):
        usage.add(fp, "m", requests=n)
    pool._rot.clear()
    assert [pool.pick("m") for _ in range(4)] == [b, b, b, a]


def test_daily_limit_per_model_and_override():
    clock = ManualClock()
    pool = make_pool(clock, keys=KEYS[:2], API_KEY_DAILY_LIMIT="2", MODEL_DAILY_LIMITS="gemini-2.5-pro=1")
    assert [pool.pick("gemini-2.5-flash") is not None for _ in range(5)] == [True] * 4 + [False]
    assert [pool.pick("gemini-2.5-pro") is not None for _ in range(3)] == [True, True, False]
    u = pool.unavailable("gemini-2.5-flash")
    assert u.quota and u.next_day and "2 at the daily limit of 2" in u.detail
    assert math.isclose(u.retry_at, pool.quota_day.next_reset())
    clock.advance(u.retry_after + 1)  # the next quota day
    assert pool.pick("gemini-2.5-flash") is not None


def test_release_gives_back_a_request_that_never_left():
    clock = ManualClock()
    pool = make_pool(clock, keys=KEYS[:1], API_KEY_DAILY_LIMIT="1")
    key = pool.pick("m")
    assert pool.pick("m") is None
    pool.release(key, "m")
    assert pool.pick("m") is key


def test_minute_cooldown_is_per_model_and_ends():
    clock = ManualClock()
    pool = make_pool(clock, keys=KEYS[:1])
    key = pool.keys[0]
    pool.cool_down(key, "gemini-2.5-pro", 30, "per minute")
    assert pool.pick("gemini-2.5-pro") is None
    assert pool.pick("gemini-2.5-flash") is key  # the same key still serves other models
    u = pool.unavailable("gemini-2.5-pro")
    assert u.quota and not u.next_day and u.retry_after == pytest.approx(30)
    clock.advance(30)
    assert pool.pick("gemini-2.5-pro") is key


def test_cooldown_without_retry_info_is_a_minute():
    clock = ManualClock()
    pool = make_pool(clock, keys=KEYS[:1])
    pool.cool_down(pool.keys[0], "m", None, "quota")
    clock.advance(59)
    assert pool.pick("m") is None
    clock.advance(1)
    assert pool.pick("m") is not None


def test_daily_exhaustion_is_per_model_until_the_reset():
    clock = ManualClock(at("2026-05-05 10:00:00"))
    pool = make_pool(clock, keys=KEYS[:2])
    a, b = pool.keys
    pool.exhaust(a, "gemini-2.5-pro", "per day")
    assert {pool.pick("gemini-2.5-pro").fp for _ in range(4)} == {b.fp}
    assert pool.pick("gemini-2.5-flash") is a
    clock.advance(13 * 3600 + 59 * 60)  # 23:59 the same day
    assert all(pool.pick("gemini-2.5-pro") is b for _ in range(3))
    clock.advance(120)  # the quota day rolled over while running: counters start again at 0
    pool.check_day()  # what each flush tick does, so this happens even with no traffic
    assert pool.usage.requests(b.fp, "gemini-2.5-pro") == 0 and pool.usage.day == "2026-05-06"
    assert {pool.pick("gemini-2.5-pro").fp for _ in range(2)} == {a.fp, b.fp}


def test_back_off_grows_with_failures_in_a_row_and_clears_on_success():
    clock = ManualClock()
    pool = make_pool(clock, keys=KEYS[:1])
    key = pool.keys[0]
    delays = [pool.back_off(key) for _ in range(8)]
    assert delays[:4] == [1, 2, 4, 8] and delays[-1] == BACKOFF_MAX
    assert pool.pick("m") is None
    u = pool.unavailable("m")
    assert not u.quota and u.retry_after == pytest.approx(BACKOFF_MAX)
    clock.advance(BACKOFF_MAX)
    assert pool.pick("m") is key
    pool.success(key, "m")
    assert key.backoff_failures == 0 and pool.back_off(key) == 1


def test_disabled_keys_and_no_keys():
    clock = ManualClock()
    pool = make_pool(clock, keys=KEYS[:2])
    for k in pool.keys:
        pool.disable(k, "InvalidKey")
    assert pool.pick("m") is None
    u = pool.unavailable("m")
    assert math.isinf(u.retry_at) and "all 2 keys are disabled" in u.detail
    pool.enable(pool.keys[0])
    assert pool.pick("m") is pool.keys[0]
    empty = make_pool(clock, keys=[])
    assert "GEMINI_API_KEYS" in empty.unavailable("m").detail


def test_state_drains_for_the_flusher_and_loads_back():
    clock = ManualClock()
    pool = make_pool(clock, keys=KEYS[:2])
    a, b = pool.keys
    pool.disable(a, "InvalidKey: API key not valid")
    pool.cool_down(b, "gemini-2.5-pro", 30, "per minute")
    pool.exhaust(b, "gemini-2.5-flash", "per day")
    keys, models = pool.drain_states()
    assert pool.drain_states() == ([], [])
    fresh = make_pool(clock, keys=KEYS[:2])
    fresh.load({row[0]: row[1:] for row in keys}, {(r[0], r[1]): r[2:] for r in models})
    fa, fb = fresh.keys
    assert not fa.usable and fa.disabled_reason.startswith("InvalidKey")
    assert fresh.pick("gemini-2.5-pro") is None and fresh.pick("gemini-2.5-flash") is None
    assert fresh.pick("gemini-2.5-flash-lite") is fb


def test_choosing_a_key_does_not_get_slower_with_history_or_with_parked_keys():
    """Cost is measured in steps (keys looked at), not seconds: deterministic on any machine."""
    clock = ManualClock()
    keys = [make_key(i) for i in range(1000)]
    pool = make_pool(clock, keys=keys)
    for k in pool.keys[:900]:  # 900 keys out of Google's daily quota for this model
        pool.exhaust(k, "m", "per day")
    for _ in range(20_000):
        pool.pick("m")
    rot = pool._rot[("gemini", "m")]
    assert len(rot.level_of) == 100  # parked keys are out of the rotation, not skipped on every pick
    looked = 0
    for _, key in rot.ordered():
        looked += 1
        if pool._ready(key, "m", clock.time()):
            break
    assert looked == 1
