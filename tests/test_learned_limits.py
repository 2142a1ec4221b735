"""Limits learned from Google's 429 bodies, project groups, per-key pacing and background re-checks, through
the real HTTP path against the fake, with an injected clock (server/clock.py ManualClock)."""
from __future__ import annotations

import asyncio

from server.clock import ManualClock
from server.redact import fingerprint
from tests.conftest import KEYS
from tests.fake_gemini import Reply, quota_body
from tests.support.wait import wait_until

ADMIN = "admin-password-for-learned-limits"
MODEL = "gemini-2.5-flash"
HELLO = [{"role": "user", "content": "hello"}]
PROJECT = "123456789012"


def ask(running, model=MODEL):
    with running.http() as http:
        return http.post("/v1/chat/completions", headers=running.auth(), json={"model": model, "messages": HELLO})


def calls_by(fake, key, model=MODEL):
    return sum(1 for r in fake.generate_calls(model) if r.key == key)


def key_row(running, key):
    with running.http() as http:  # the dashboard's own data (admin Bearer: sessions read the real clock)
        r = http.get("/api/status", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    rows = r.json()["keys"]
    return next(k for k in rows if k["fp"] == fingerprint(key))


def model_row(row, model=MODEL):
    return next(m for m in row["models"] if m["model"] == model)


def due(running):
    """The keys whose re-check has come (read on the server's loop)."""
    async def read():
        return running.kl.rechecker.due()
    return running.loop.run(read())


def refuse_once(fake, key, body):
    """The fake refuses `key`'s first generate call with `body` (a 429), then answers normally."""
    done = []

    def responder(rec):
        if rec.key == key and not done:
            done.append(rec)
            return Reply(status=429, body=body)
        return None

    fake.responder = responder
    return done


def test_a_daily_limit_google_named_stops_the_key_before_google_refuses_and_survives_a_restart(
        start_keyloom, fake, tmp_path):
    clock = ManualClock()
    data_dir = tmp_path / "data"
    env = dict(GEMINI_API_KEYS=",".join(KEYS[:2]), ADMIN_PASSWORD=ADMIN)
    running = start_keyloom(clock=clock, data_dir=data_dir, **env)
    refused = refuse_once(fake, KEYS[0], quota_body(MODEL, "day", "3600s", value=2))
    for _ in range(2):
        assert ask(running).status_code == 200
    assert refused  # Google said "2 per day" for KEYS[0]; its other call went to KEYS[1]
    row = model_row(key_row(running, KEYS[0]))
    assert row["learned"]["per_day"] == 2 and row["limit"] == 0 and row["state"] == "exhausted"

    clock.advance(86400)  # the next quota day: exhaustion is over, what was learned stays
    fake.requests.clear()
    for _ in range(6):
        assert ask(running).status_code == 200
    assert calls_by(fake, KEYS[0]) == 2 and calls_by(fake, KEYS[1]) == 4  # stopped at 2, before any refusal

    running.loop.run(running.kl.stop(0))
    again = start_keyloom(clock=clock, data_dir=data_dir, **env)  # the same DATA_DIR: counts and limits come back
    for _ in range(3):
        assert ask(again).status_code == 200
    assert calls_by(fake, KEYS[0]) == 0 and calls_by(fake, KEYS[1]) == 3
    assert model_row(key_row(again, KEYS[0]))["learned"]["per_day"] == 2


def test_a_per_minute_limit_google_named_spreads_calls_and_holds_until_the_minute_passes(start_keyloom, fake):
    clock = ManualClock()
    running = start_keyloom(clock=clock, GEMINI_API_KEYS=KEYS[0], ADMIN_PASSWORD=ADMIN)
    refused = refuse_once(fake, KEYS[0], quota_body(MODEL, "minute", "1s", value=2))
    r = ask(running)
    assert r.status_code == 429 and refused  # the only key cools down for Google's 1 s
    assert model_row(key_row(running, KEYS[0]))["learned"]["per_minute"] == 2
    clock.advance(2)
    fake.requests.clear()
    assert ask(running).status_code == 200
    assert ask(running).status_code == 200
    third = ask(running)  # two calls in this minute: Keyloom itself says 429, Google is not asked
    assert third.status_code == 429 and "per-minute limit Google named" in third.json()["error"]["message"]
    assert len(fake.generate_calls()) == 2
    assert 0 < int(third.headers["retry-after"]) <= 60
    clock.advance(61)
    assert ask(running).status_code == 200 and len(fake.generate_calls()) == 3


def test_a_project_runs_out_of_its_daily_quota_for_every_key_it_holds(start_keyloom, fake):
    clock = ManualClock()
    running = start_keyloom(clock=clock, ADMIN_PASSWORD=ADMIN)  # KEYS[0..2]
    # Google names the project of KEYS[0] and KEYS[1] in a per-minute refusal each: one request meets both
    named: set[str] = set()

    def name_project(rec):
        if rec.key in KEYS[:2] and rec.key not in named:
            named.add(rec.key)
            return Reply(status=429, body=quota_body(MODEL, "minute", "1s", project=PROJECT))
        return None

    fake.responder = name_project
    assert ask(running).status_code == 200 and named == set(KEYS[:2])
    clock.advance(2)
    assert key_row(running, KEYS[0])["project"] == key_row(running, KEYS[1])["project"] == "…9012"
    assert key_row(running, KEYS[2])["project"] is None
    fake.requests.clear()
    # now the project's daily quota runs out on one of its keys: the other key of the project is parked too
    done = []

    def responder(rec):
        if rec.key in KEYS[:2] and not done:
            done.append(rec.key)
            return Reply(status=429, body=quota_body(MODEL, "day", "3600s", project=PROJECT))
        return None

    fake.responder = responder
    for _ in range(5):
        assert ask(running).status_code == 200
    assert len(done) == 1
    assert {r.key for r in fake.generate_calls()} == {done[0], KEYS[2]}  # one refusal, then only KEYS[2]
    other = KEYS[1] if done[0] == KEYS[0] else KEYS[0]
    row = model_row(key_row(running, other))
    assert row["state"] == "exhausted"
    assert ask(running, "gemini-2.0-flash").status_code == 200  # per model: the project's other models go on
    clock.advance(86400)
    fake.requests.clear()
    for _ in range(3):
        assert ask(running).status_code == 200
    assert {r.key for r in fake.generate_calls()} == set(KEYS)  # the next quota day: all back


def test_pacing_spreads_a_burst_over_keys_and_waits_the_shortest_gap(start_keyloom, fake):
    clock = ManualClock()
    running = start_keyloom(clock=clock, GEMINI_API_KEYS=",".join(KEYS[:2]), KEY_MIN_INTERVAL_MS=1500)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the dispatcher's wait, on the injected clock
        waits.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    running.kl.dispatcher.sleep = sleep
    for _ in range(2):
        assert ask(running).status_code == 200
    assert waits == [] and [r.key for r in fake.generate_calls()] == KEYS[:2]  # one call per key
    clock.advance(0.5)
    assert ask(running).status_code == 200  # both keys called within 1.5 s: wait the shortest remaining gap
    assert waits == [1.0]
    calls = fake.generate_calls()
    assert calls[2].key == KEYS[0]  # the key whose gap ended first
    clock.advance(1.5)
    assert ask(running).status_code == 200 and len(waits) == 1  # past the gap: no wait


def test_pacing_is_off_by_default(start_keyloom, fake):
    clock = ManualClock()
    running = start_keyloom(clock=clock, GEMINI_API_KEYS=KEYS[0])

    async def never(seconds: float) -> None:
        raise AssertionError(f"waited {seconds}s with pacing off")

    running.kl.dispatcher.sleep = never
    for _ in range(3):
        assert ask(running).status_code == 200
    assert len(fake.generate_calls()) == 3


def test_a_key_whose_api_was_disabled_comes_back_by_itself_when_google_accepts_it(start_keyloom, fake):
    clock = ManualClock()
    fake.keys[KEYS[0]] = "service_disabled"
    fake.projects[KEYS[0]] = "987654321098"
    fake.keys[KEYS[1]] = "invalid"
    running = start_keyloom(clock=clock, ADMIN_PASSWORD=ADMIN, KEY_RECHECK_MINUTES=10)
    for _ in range(3):
        assert ask(running).status_code == 200
    pool = running.kl.pool
    k0, k1 = pool.get(fingerprint(KEYS[0])), pool.get(fingerprint(KEYS[1]))
    wait_until(lambda: not k0.usable and not k1.usable, "both bad keys to be taken out")
    assert key_row(running, KEYS[0])["project"] == "…1098"  # the 403 named the project
    rechecks = running.kl.rechecker
    before = rechecks.checks
    clock.advance(5 * 60)
    assert due(running) == []  # not yet: every 10 minutes
    fake.keys[KEYS[0]] = "ok"  # the owner enabled the API in Google's console
    fake.keys[KEYS[1]] = "ok"  # (an invalid key is never asked again, whatever Google would say)
    fake.requests.clear()
    clock.advance(6 * 60)
    wait_until(lambda: k0.usable, "the re-check to bring the key back")
    assert not k1.usable and rechecks.checks == before + 1
    listed = [r for r in fake.requests if r.action == "listModels"]
    assert [r.key for r in listed] == [KEYS[0]] and listed[0].query.get("pageSize") == "1"
    assert fake.generate_calls() == []  # no generation quota spent
    assert key_row(running, KEYS[0])["state"] == "active"
    fake.requests.clear()
    for _ in range(4):
        assert ask(running).status_code == 200
    assert KEYS[0] in {r.key for r in fake.generate_calls()}


def test_an_exhausted_key_that_went_bad_meanwhile_is_taken_out_at_its_re_check(start_keyloom, fake):
    clock = ManualClock()
    running = start_keyloom(clock=clock, GEMINI_API_KEYS=",".join(KEYS[:2]), KEY_RECHECK_MINUTES=30)
    fake.key_model[(KEYS[0], MODEL)] = "quota_day"
    for _ in range(2):
        assert ask(running).status_code == 200
    k0 = running.kl.pool.get(fingerprint(KEYS[0]))
    assert running.kl.pool.model_state(k0, MODEL)[0] == "exhausted" and k0.usable
    fake.keys[KEYS[0]] = "leaked"
    wait_until(lambda: fingerprint(KEYS[0]) in running.kl.rechecker.seen, "the re-checker to notice the key")
    clock.advance(31 * 60)
    wait_until(lambda: not k0.usable, "the re-check to take the leaked key out")
    assert "leaked" in k0.disabled_reason
    clock.advance(31 * 60)  # a leaked key is never asked again
    assert due(running) == []
