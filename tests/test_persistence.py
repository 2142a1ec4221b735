"""Quotas that survive restarts and crashes: real subprocesses, a real SQLite file, the fake counting
what Google received."""
from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
import threading

import httpx
import openai
import pytest

from server.clock import ManualClock
from tests.conftest import KEYS, PASSWORD
from tests.support.closing import track
from tests.support.proc import KeyloomProcess
from tests.support.wait import wait_until

HELLO = [{"role": "user", "content": "hello"}]


def proc_env(fake, **extra):
    env = {"GEMINI_API_KEYS": ",".join(KEYS[:2]), "GEMINI_BASE_URL": fake.base_url, "PASSWORD": PASSWORD,
           "MAX_REQUESTS_PER_MINUTE": "0", "MAX_REQUESTS_PER_DAY_PER_IP": "0", "ACCESS_LOG": "false"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def client(p):
    return track(openai.OpenAI(base_url=p.url + "/v1", api_key=PASSWORD, max_retries=0, timeout=20))


def post(p, model="gemini-2.0-flash"):
    return httpx.post(p.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {PASSWORD}"},
                      json={"model": model, "messages": HELLO}, timeout=20)


def test_daily_limit_holds_across_a_restart_and_ends_with_the_quota_day(fake, tmp_path):
    env = proc_env(fake, API_KEY_DAILY_LIMIT=2)
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        for _ in range(4):
            assert post(p).status_code == 200
        fifth = post(p)
        assert fifth.status_code == 429
        seconds = int(fifth.headers["retry-after"])
        assert 0 < seconds <= 25 * 3600 and fifth.headers["x-should-retry"] == "false"
        message = fifth.json()["error"]["message"]
        assert "gemini-2.0-flash" in message and "daily limit of 2" in message and "frees up at" in message
    finally:
        assert p.stop(signal.SIGTERM) == 0
    assert len(fake.generate_calls()) == 4

    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        sixth = post(p)
        assert sixth.status_code == 429  # the counts came back from the database
        assert post(p, "gemini-2.5-flash").status_code == 200  # the limit is per model
    finally:
        assert p.stop() == 0
    assert len(fake.generate_calls()) == 5

    # the same database, a day later (the clock injected through the test-only --clock-offset flag)
    p = KeyloomProcess("--clock-offset", str(seconds + 120), env=env, data_dir=tmp_path).wait_ready()
    try:
        assert post(p).status_code == 200
    finally:
        p.stop()


def test_the_quota_day_rolls_over_while_running(start_keyloom, fake):
    clock = ManualClock()
    kl = start_keyloom(clock=clock, API_KEY_DAILY_LIMIT="1", GEMINI_API_KEYS=KEYS[0])
    c = kl.client()
    c.chat.completions.create(model="gemini-2.0-flash", messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="gemini-2.0-flash", messages=HELLO)
    clock.advance(kl.kl.quota_day.next_reset() - clock.time() + 1)
    assert c.chat.completions.create(model="gemini-2.0-flash", messages=HELLO).choices[0].message.content


def test_kill_9_under_load_keeps_what_was_flushed_and_never_corrupts(fake, tmp_path):
    """Counts written by a flush survive a kill -9 mid-traffic and the file stays intact; what is lost is at most
    what came after the last flush (how much that is per interval is a benchmark figure, not asserted here)."""
    env = proc_env(fake, FLUSH_INTERVAL=0.2, API_KEY_DAILY_LIMIT=0)
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    stop = threading.Event()
    ok, sent = [0], [0]

    def hammer():
        with httpx.Client(timeout=10) as h:
            while not stop.is_set():
                try:
                    sent[0] += 1
                    r = h.post(p.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {PASSWORD}"},
                               json={"model": "gemini-2.0-flash", "messages": HELLO})
                    ok[0] += r.status_code == 200
                except httpx.HTTPError:
                    return

    def on_disk() -> int:
        con = sqlite3.connect(tmp_path / "keyloom.sqlite3", timeout=5)
        try:
            return con.execute("SELECT COALESCE(SUM(requests), 0) FROM key_usage").fetchone()[0]
        finally:
            con.close()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    seen = wait_until(lambda: (n := on_disk()) >= 20 and n, "a flush of at least 20 requests, under load")
    os.kill(p.proc.pid, signal.SIGKILL)  # while the load goes on
    stop.set()
    for t in threads:
        t.join(10)
    p.proc.wait(10)
    received = len(fake.generate_calls())
    assert ok[0] > 0

    con = sqlite3.connect(tmp_path / "keyloom.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    final = con.execute("SELECT COALESCE(SUM(requests), 0) FROM key_usage").fetchone()[0]
    logged = con.execute("SELECT COUNT(*) FROM request_log").fetchone()[0]
    con.close()
    assert seen <= final <= received  # nothing flushed was lost, nothing was counted that Google did not get
    assert 0 < logged <= sent[0]  # one row per client request (identical ones may share an upstream call)

    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()  # it starts again on the same file
    try:
        assert post(p).status_code == 200
    finally:
        p.stop()


def test_per_minute_quota_cools_only_that_key_for_that_model(start_keyloom, fake):
    clock = ManualClock()
    kl = start_keyloom(clock=clock, GEMINI_API_KEYS=",".join(KEYS[:2]))
    a, b = KEYS[:2]
    fake.key_model[(a, "gemini-2.5-pro")] = "quota_minute"  # RetryInfo says 47s
    c = kl.client()
    for _ in range(3):
        c.chat.completions.create(model="gemini-2.5-pro", messages=HELLO)
    pro = [r.key for r in fake.generate_calls("gemini-2.5-pro")]
    assert pro.count(a) == 1 and pro.count(b) == 3  # tried once, then left alone
    fake.requests.clear()
    for _ in range(4):
        c.chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
    assert sorted(r.key for r in fake.generate_calls()) == sorted([a, a, b, b])  # other models: unaffected
    del fake.key_model[(a, "gemini-2.5-pro")]
    clock.advance(46)
    fake.requests.clear()
    for _ in range(2):
        c.chat.completions.create(model="gemini-2.5-pro", messages=HELLO)
    assert {r.key for r in fake.generate_calls()} == {b}
    clock.advance(1)  # the delay Google gave has passed
    fake.requests.clear()
    for _ in range(4):
        c.chat.completions.create(model="gemini-2.5-pro", messages=HELLO)
    assert a in {r.key for r in fake.generate_calls()}


def test_per_day_quota_and_invalid_keys_stay_parked_after_a_restart(fake, tmp_path):
    a, b, c = KEYS
    fake.key_model[(a, "gemini-2.5-pro")] = "quota_day"
    fake.keys[b] = "invalid"
    env = proc_env(fake, GEMINI_API_KEYS=",".join(KEYS))
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        for _ in range(3):
            assert post(p, "gemini-2.5-pro").status_code == 200
    finally:
        assert p.stop() == 0
    first = [r.key for r in fake.generate_calls()]
    assert first.count(a) == 1 and first.count(b) == 1
    fake.key_model.clear()   # even if Google would now answer, the day is not over and b stays invalid
    fake.keys[b] = "ok"
    fake.requests.clear()
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        for _ in range(4):
            assert post(p, "gemini-2.5-pro").status_code == 200
        for _ in range(4):
            assert post(p, "gemini-2.5-flash").status_code == 200
        health = httpx.get(p.url + "/health").json()
    finally:
        p.stop()
    pro = [r.key for r in fake.generate_calls("gemini-2.5-pro")]
    flash = [r.key for r in fake.generate_calls("gemini-2.5-flash")]
    assert set(pro) == {c}                       # a: exhausted for pro today; b: disabled
    assert sorted(flash) == sorted([a, a, c, c])  # a still serves other models; b is never tried again
    assert health["keys"] == {"total": 3, "active": 2, "disabled": 1}


def test_300_requests_over_3_keys_spread_within_one_per_model(start_keyloom, fake):
    kl = start_keyloom()
    c = kl.client()
    models = ["gemini-2.0-flash", "gemini-2.5-flash"]

    def one(i):
        return c.chat.completions.create(model=models[i % 2], messages=HELLO).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        assert all(pool.map(one, range(300)))
    for model in models:
        per_key = [sum(1 for r in fake.generate_calls(model) if r.key == k) for k in KEYS]
        assert sum(per_key) == 150 and max(per_key) - min(per_key) <= 1, (model, per_key)
