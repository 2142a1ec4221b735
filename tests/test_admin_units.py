"""The dashboard's pure pieces: sign-in throttle, day boundaries, settings written back as text."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from server.clock import ManualClock
from server.settings import Settings, format_value, load_specs, parse_value
from server.store.requestlog import DayOf, outcome
from server.throttle import WINDOW, CredentialThrottle


def test_throttle_window_and_independent_ips():
    clock = ManualClock()
    t = CredentialThrottle(clock, lambda: 3)
    for _ in range(2):
        t.failed("a")
    assert t.retry_after("a") == 0
    clock.advance(10)
    t.failed("a")
    assert t.retry_after("a") == WINDOW - 10  # until the first of the three leaves the window
    assert t.retry_after("b") == 0
    clock.advance(WINDOW - 11)
    assert t.retry_after("a") == 1  # the oldest failure leaves the window in one second
    clock.advance(1)
    assert t.retry_after("a") == 0
    t.succeeded("a")
    assert t.retry_after("a") == 0


def test_throttle_memory_is_bounded():
    t = CredentialThrottle(ManualClock(), lambda: 3, max_tracked=10)
    for i in range(50):
        t.failed(f"10.0.0.{i}")
    assert len(t._failures) == 10


def test_day_of_follows_the_zone_and_dst():
    day = DayOf("America/Los_Angeles")
    la = ZoneInfo("America/Los_Angeles")
    before = datetime(2026, 3, 7, 23, 59, 59, tzinfo=la).timestamp()
    assert day(before) == "2026-03-07"
    assert day(before + 1) == "2026-03-08"
    spring = datetime(2026, 3, 8, 12, tzinfo=la).timestamp()  # a 23-hour day
    assert day.start_of(spring) == datetime(2026, 3, 8, tzinfo=la).timestamp()
    assert day(datetime(2026, 3, 8, 23, 59, tzinfo=la).timestamp()) == "2026-03-08"
    assert day(datetime(2026, 3, 9, 0, 0, 1, tzinfo=la).timestamp()) == "2026-03-09"


@pytest.mark.parametrize("status,kind", [(200, "ok"), (399, "ok"), (400, "client"), (404, "client"),
                                         (429, "limited"), (500, "error"), (503, "error")])
def test_outcome(status, kind):
    assert outcome(status) == kind


def test_every_default_survives_format_and_parse():
    specs = load_specs()
    s = Settings.from_env({})
    for name, spec in specs.items():
        text = format_value(spec, s.values[name])
        assert parse_value(spec, text) == s.values[name], name


def test_values_written_back_parse_to_the_same():
    specs = load_specs()
    cases = {"MODEL_DAILY_LIMITS": "a=1, b=2", "BLOCKED_MODELS": "x, y", "FAKE_STREAMING_INTERVAL": "0.25",
             "FAKE_STREAMING": "off", "LOG_LEVEL": "debug"}
    for name, raw in cases.items():
        v = parse_value(specs[name], raw)
        assert parse_value(specs[name], format_value(specs[name], v)) == v


@pytest.mark.parametrize("raw,ok", [("/", "/"), ("/admin/", "/admin"), ("/a/b", "/a/b"), ("admin", None),
                                    ("/a b", None), ("/a?x", None), ("//x", None)])
def test_dashboard_path_values(raw, ok):
    spec = load_specs()["DASHBOARD_PATH"]
    if ok is None:
        with pytest.raises(ValueError):
            parse_value(spec, raw)
    else:
        assert parse_value(spec, raw) == ok


def test_live_settings_are_never_secrets_nor_start_up_only():
    specs = load_specs()
    live = {n for n, s in specs.items() if s.live}
    assert not {n for n in live if specs[n].secret}
    start_up_only = {"PORT", "HOST", "DATA_DIR", "GEMINI_API_KEYS", "PASSWORD", "MAX_CONNECTIONS", "FLUSH_INTERVAL",
                     "MAX_REQUEST_BODY_MB", "QUOTA_RESET_TZ", "UVLOOP", "DASHBOARD_PATH", "ADMIN_PASSWORD"}
    assert not live & start_up_only
