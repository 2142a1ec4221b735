"""Several Keyloom processes, one pool: a real redis-server and real Keyloom replicas in front of it.

In-process replicas (three `start_keyloom` with one REDIS_URL) where the test drives the flush ticks itself,
so a bound is checked exactly, tick by tick; real subprocesses where a process must die (kill -9) or Redis
must go away and come back under traffic. Sequence points are events (a log line, a count in Redis, a
request answered), never a sleep.
"""
from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from server.clock import ManualClock
from server.store.errors import StoreDown
from server.upstream.http import HttpError
from tests.conftest import KEYS, PASSWORD
from tests.fake_gemini import Reply, quota_body
from tests.support import redis_server
from tests.support.admin import AdminClient
from tests.support.proc import KeyloomProcess
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until
from tests.test_workers import children

HELLO = [{"role": "user", "content": "hello"}]
MODEL = "gemini-2.0-flash"
NO_TICKS = "60"  # in-process replicas: the test flushes (and stops the timer)


@pytest.fixture
def redis(tmp_path: Path):
    redis_server.require()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def chat(url: str, h: httpx.Client | None = None) -> int:
    if h is None:
        with httpx.Client(timeout=20) as own:
            return chat(url, own)
    r = h.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {PASSWORD}"},
               json={"model": MODEL, "messages": HELLO})
    return r.status_code


def usage_in_redis(server: RedisServer, prefix: str = "keyloom:") -> int:
    r = server.sync_client()
    try:
        total = 0
        for name in r.scan_iter(prefix + "usage:*"):
            total += sum(int(v) for f, v in r.hgetall(name).items() if f.endswith("\trequests"))
        return total
    finally:
        r.close()


def replicas(start_keyloom, server: RedisServer, n: int = 3, **env):
    rs = [start_keyloom(REDIS_URL=server.url, FLUSH_INTERVAL=NO_TICKS, REPLICA_NAME=f"r{i}", **env)
          for i in range(n)]
    for r in rs:  # the ticks are the test's: no timer of their own
        r.loop.run(_stop_timer(r.kl))
    return rs


async def _stop_timer(kl) -> None:
    if kl.flusher._callback is not None:
        kl.flusher._callback.stop()


def tick(rs) -> None:
    """One flush tick on every replica, twice round: each writes its deltas, then each reads the cluster's
    totals (with real timers the two passes are the ticks of the others that fall in between)."""
    for _ in range(2):
        for r in rs:
            r.loop.run(r.kl.flusher.flush())


# -- the pool is one pool ----------------------------------------------------------------------------------

def test_a_daily_limit_holds_across_three_replicas_within_one_tick_of_the_others(redis, start_keyloom, fake):
    """The documented bound, checked exactly: between two ticks each replica decides from the totals it read
    at the last one plus its own count, so the cluster can pass the limit by at most what the *other* replicas
    served in that one tick. Three concurrent requests per replica per tick, limit 20, one key."""
    limit, per_round = 20, 3
    rs = replicas(start_keyloom, redis, GEMINI_API_KEYS=KEYS[0], API_KEY_DAILY_LIMIT=limit)
    rounds: list[list[int]] = []
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        while not rounds or any(rounds[-1]):
            assert len(rounds) < 20
            jobs = [[pool.submit(chat, r.url) for _ in range(per_round)] for r in rs]
            rounds.append([sum(j.result() == 200 for j in js) for js in jobs])
            tick(rs)
    served = len(fake.generate_calls())
    assert served == sum(map(sum, rounds))
    total = 0
    for counts in rounds:
        for mine in counts:  # each replica's own count is exact: it never serves past what it knows is left
            assert mine <= max(0, limit - total), rounds
        if total <= limit < total + sum(counts):  # the round that crossed the limit
            assert total + sum(counts) - limit <= sum(counts) - max(counts), rounds  # ≤ the others' one tick
        total += sum(counts)
    assert served >= limit  # and nothing was refused while there was room
    assert rounds[-1] == [0, 0, 0]  # once the totals are read, every replica refuses
    totals = [r.kl.pool.usage.requests(r.kl.pool.keys[0].fp, MODEL) for r in rs]
    assert totals == [served] * 3  # every replica decides from the cluster's count


def test_a_key_disabled_on_one_replica_is_skipped_by_the_others_without_waiting_for_a_tick(
        redis, start_keyloom, fake):
    rs = replicas(start_keyloom, redis, GEMINI_API_KEYS=",".join(KEYS[:2]))
    bad = rs[0].kl.pool.keys[0]
    fake.keys[KEYS[0]] = "invalid"
    for _ in range(2):  # whichever key replica 0 picks first, the invalid one is met within two requests
        assert chat(rs[0].url) == 200
    assert not rs[0].kl.pool.get(bad.fp).usable
    for r in rs[1:]:  # no tick runs: the change notice alone brings it
        wait_until(lambda r=r: not r.kl.pool.get(bad.fp).usable, "the other replicas to see the key disabled")
    fake.requests.clear()
    for r in rs[1:]:
        assert chat(r.url) == 200
    assert {c.key for c in fake.generate_calls()} == {KEYS[1]}


def test_a_key_cooling_on_one_replica_cools_on_the_others(redis, start_keyloom, fake):
    rs = replicas(start_keyloom, redis, GEMINI_API_KEYS=",".join(KEYS[:2]))
    fake.key_model[(KEYS[0], MODEL)] = "quota_minute"
    for _ in range(2):
        assert chat(rs[0].url) == 200
    cooled = rs[0].kl.pool.keys[0]
    assert rs[0].kl.pool.model_state(cooled, MODEL)[0] == "cooling"
    for r in rs[1:]:
        wait_until(lambda r=r: r.kl.pool.model_state(r.kl.pool.get(cooled.fp), MODEL)[0] == "cooling",
                   "the other replicas to see the key cooling")


def test_a_per_minute_limit_counts_the_requests_of_every_replica(redis, start_keyloom, fake):
    """MAX_REQUESTS_PER_MINUTE=6 over three replicas: two requests each fill it; after one tick every replica
    refuses (alone, each would take six). Clocks are injected and stand still: the minute does not turn."""
    rs = [start_keyloom(clock=ManualClock(1_750_000_020.0), REDIS_URL=redis.url, FLUSH_INTERVAL=NO_TICKS,
                        MAX_REQUESTS_PER_MINUTE=6) for _ in range(3)]
    for r in rs:
        r.loop.run(_stop_timer(r.kl))
    assert [chat(r.url) for r in rs for _ in range(2)] == [200] * 6
    tick(rs)
    for r in rs:
        with r.http() as h:
            refused = h.post("/v1/chat/completions", headers=r.auth(), json={"model": MODEL, "messages": HELLO})
        assert refused.status_code == 429 and "MAX_REQUESTS_PER_MINUTE" in refused.text
        assert int(refused.headers["Retry-After"]) >= 1


def test_a_proxy_resting_on_one_replica_rests_on_the_others(redis, start_keyloom, fake):
    proxies = "http://127.0.0.1:9,http://user:proxy-pw-1@127.0.0.1:10"
    rs = replicas(start_keyloom, redis, n=2, UPSTREAM_PROXIES=proxies, GEMINI_API_KEYS="")  # no key: no calls
    second = rs[0].kl.egress.exits[1]

    async def fail() -> None:
        rs[0].kl.egress.failed(second, HttpError("connection refused"))
    rs[0].loop.run(fail())
    other = rs[1].kl.egress.exits[1]
    wait_until(lambda: other.resting(rs[1].kl.clock.time()), "the other replica to rest the proxy too")
    assert not rs[1].kl.egress.exits[0].resting(rs[1].kl.clock.time())  # only that one
    assert other.failures == 1 and "proxy-pw-1" not in (other.last_error or "")

    async def works() -> None:
        rs[0].kl.egress.succeeded(second)
    rs[0].loop.run(works())
    wait_until(lambda: not other.resting(rs[1].kl.clock.time()), "the proxy back on the other replica")


def test_a_client_keys_daily_quota_counts_its_requests_on_every_replica(redis, start_keyloom, fake):
    client_key = "kl-cluster-quota-key-0123456789abcdef"
    keys = f'[{{"name": "friend", "key": "{client_key}", "daily_requests": 4}}]'
    rs = replicas(start_keyloom, redis, n=2, CLIENT_KEYS=keys)

    def ask(r) -> int:
        with r.http() as h:
            return h.post("/v1/chat/completions", headers={"Authorization": f"Bearer {client_key}"},
                          json={"model": MODEL, "messages": HELLO}).status_code
    assert [ask(r) for r in rs for _ in range(2)] == [200] * 4  # two on each: alone, each has room for four
    tick(rs)
    assert [ask(r) for r in rs] == [429, 429]


def test_what_google_named_on_one_replica_holds_on_the_others(redis, start_keyloom, fake):
    """A 429 naming a per-day limit of 3 and the key's project, met by one replica: the others learn the limit
    and the project (shared key states), and hold the key there."""
    rs = replicas(start_keyloom, redis, n=2, GEMINI_API_KEYS=KEYS[0])
    fp = rs[0].kl.pool.keys[0].fp
    done: list[int] = []

    def refuse_once(rec):
        if not done:
            done.append(1)
            return Reply(status=429, body=quota_body(MODEL, "day", "3600s", value=3, project="987654321098"))
        return None
    fake.responder = refuse_once
    with rs[0].http() as h:
        h.post("/v1/chat/completions", headers=rs[0].auth(), json={"model": MODEL, "messages": HELLO})
    assert rs[0].kl.pool.learned.project_of(fp) == "987654321098"
    tick(rs)
    other = rs[1].kl.pool
    assert other.learned.project_of(fp) == "987654321098"
    learned = other.learned.get(fp, MODEL, rs[1].kl.clock.time())
    assert learned is not None and learned.per_day == 3
    assert other.model_state(other.keys[0], MODEL)[0] == "exhausted"  # parked for the day there too


def test_a_redis_with_a_password_and_a_wrong_one(tmp_path, start_keyloom, fake):
    redis_server.require()
    server = RedisServer(tmp_path / "locked", password="redis-pass-8f3a").start()
    try:
        kl = start_keyloom(REDIS_URL=server.url)
        assert chat(kl.url) == 200
        wrong = KeyloomProcess(env={"GEMINI_API_KEYS": KEYS[0], "GEMINI_BASE_URL": fake.base_url,
                                    "PASSWORD": PASSWORD, "ADMIN_PASSWORD": "admin-password-1",
                                    "REDIS_URL": server.url.replace("redis-pass-8f3a", "not-the-pass-77"),
                                    "REDIS_START_TIMEOUT": "600"}, data_dir=tmp_path / "wrong")
        assert wrong.proc.wait(60) == 2  # at once: waiting does not mend a wrong password
        out = wrong.output()
        assert "refused Keyloom" in out and "not-the-pass-77" not in out and "Traceback" not in out
    finally:
        server.kill()


def test_the_dashboard_of_any_replica_shows_every_replicas_requests(redis, start_keyloom, fake):
    rs = replicas(start_keyloom, redis, ADMIN_PASSWORD="admin-password-1")
    for r in rs:
        assert chat(r.url) == 200
    tick(rs)
    with rs[2].http(headers={"Authorization": "Bearer admin-password-1"}) as h:
        shown = h.get("/api/requests").json()["requests"]
    assert len(shown) == 3 and all(row["status"] == 200 for row in shown)


# -- processes die, Redis goes away --------------------------------------------------------------------------

def proc_env(fake, server: RedisServer, **extra):
    env = {"GEMINI_API_KEYS": ",".join(KEYS[:2]), "GEMINI_BASE_URL": fake.base_url, "PASSWORD": PASSWORD,
           "ADMIN_PASSWORD": "admin-password-1", "REDIS_URL": server.url, "FLUSH_INTERVAL": "0.2",
           "MAX_REQUESTS_PER_MINUTE": "0", "MAX_REQUESTS_PER_DAY_PER_IP": "0", "API_KEY_DAILY_LIMIT": "0",
           "ACCESS_LOG": "false"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Load:
    """Client threads sending chat requests to some replicas until stopped; counts what they got."""

    def __init__(self, urls: list[str], threads_per_url: int = 2):
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(u,), daemon=True)
                         for u in urls for _ in range(threads_per_url)]
        for t in self._threads:
            t.start()

    def _run(self, url: str) -> None:
        with httpx.Client(timeout=20) as h:
            while not self.stop.is_set():
                try:
                    self.statuses.append(chat(url, h))
                except httpx.HTTPError as e:
                    self.errors.append(type(e).__name__)
                    if self.stop.is_set():
                        return

    def end(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)


def test_kill_9_of_one_replica_loses_at_most_its_last_tick(fake, redis, tmp_path):
    env = proc_env(fake, redis)
    a = KeyloomProcess(env={**env, "REPLICA_NAME": "a"}, data_dir=tmp_path / "a").wait_ready()
    b = KeyloomProcess(env={**env, "REPLICA_NAME": "b"}, data_dir=tmp_path / "b").wait_ready()
    load = Load([a.url, b.url])
    try:
        seen = wait_until(lambda: (n := usage_in_redis(redis)) >= 40 and n, "40 requests counted in Redis")
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
        load.end()
        assert b.stop(timeout=90) == 0, b.output()
        received = len(fake.generate_calls())
        final = usage_in_redis(redis)
        # what was written is kept; what is missing is what `a` served after its last tick (never more)
        assert seen <= final <= received
    finally:
        load.end()
        for p in (a, b):
            if p.proc.poll() is None:
                p.stop(signal.SIGKILL)


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_redis_restarted_and_away_under_traffic_no_request_fails_and_counts_add_up(fake, redis, tmp_path, how):
    """Redis goes away (stopped, or kill -9: with appendfsync always it has everything it acknowledged) while two
    replicas serve; it stays away until each replica has served more, then comes back on the same port and
    data. No request fails, and afterwards Redis counts each request Google received exactly once."""
    env = proc_env(fake, redis)
    rs = [KeyloomProcess(env={**env, "REPLICA_NAME": f"r{i}"}, data_dir=tmp_path / f"r{i}").wait_ready()
          for i in range(2)]
    load = Load([r.url for r in rs])
    try:
        wait_until(lambda: usage_in_redis(redis) >= 20, "traffic counted in Redis")
        redis.stop() if how == "stopped" else redis.kill()
        for r in rs:
            wait_until(lambda r=r: "cannot be reached" in r.output(), "each replica to notice Redis is away")
        while_down = len(load.statuses)
        wait_until(lambda: len(load.statuses) >= while_down + 40, "40 more requests answered while Redis is away")
        redis.start()  # the same port and data directory: the counts it had are back
        for r in rs:
            wait_until(lambda r=r: "is back" in r.output(), "each replica to see Redis back")
        after = len(load.statuses)
        wait_until(lambda: len(load.statuses) >= after + 20, "traffic after Redis came back")
        load.end()
        for r in rs:  # a graceful stop writes the last tick (it may wait SHUTDOWN_GRACE for a request in flight)
            assert r.stop(timeout=90) == 0, r.output()
        assert load.errors == [] and set(load.statuses) == {200}, "a request failed because Redis went away"
        # every request Google received is counted once: nothing lost while Redis was away, nothing twice
        assert usage_in_redis(redis) == len(fake.generate_calls())
        for r in rs:
            assert r.output().count("cannot be reached") == 1, r.output()  # said once, not once per tick
    finally:
        load.end()
        for r in rs:
            if r.proc.poll() is None:
                r.stop(signal.SIGKILL)


def test_a_replica_does_not_start_without_redis_and_says_why(fake, tmp_path):
    port = redis_server.free_port()  # nothing listens there
    p = KeyloomProcess(env={"GEMINI_API_KEYS": KEYS[0], "GEMINI_BASE_URL": fake.base_url, "PASSWORD": PASSWORD,
                            "ADMIN_PASSWORD": "admin-password-1",
                            "REDIS_URL": f"redis://:s3cret-redis-pw@127.0.0.1:{port}/0", "REDIS_START_TIMEOUT": "1"},
                       data_dir=tmp_path)
    assert p.proc.wait(60) == 2
    out = p.output()
    assert "cannot be reached" in out and "REDIS_START_TIMEOUT" in out and "Traceback" not in out
    assert "s3cret-redis-pw" not in out  # the URL is shown without its password


# -- what a review found -------------------------------------------------------------------------------------

ADMIN = {"Authorization": "Bearer admin-password-1"}


def test_a_disable_on_one_replica_is_not_undone_by_another_replicas_note_of_an_error(redis, start_keyloom, fake):
    """B notes an error on a key (its health changes) while A's owner disables it: B's write of the key's health
    must not carry B's stale "not disabled" over A's disabling, in Redis or in either replica."""
    rs = replicas(start_keyloom, redis, n=2, ADMIN_PASSWORD="admin-password-1")
    a, b = rs
    key_b = b.kl.pool.keys[0]

    async def note() -> None:
        b.kl.pool.note_error(key_b, "429 per-minute quota")
    b.loop.run(note())
    with a.http() as h:
        r = h.post(f"/api/keys/{key_b.fp}/disable", headers={**ADMIN, "Content-Type": "application/json"},
                   json={"note": "leaked, keep out"})
    assert r.status_code == 200, r.text
    tick([a, b])  # A writes its disabling, then B its health; then each reads
    tick([a, b])
    for r in rs:
        key = r.kl.pool.get(key_b.fp)
        assert key.disabled_reason is not None and "keep out" in key.disabled_reason, r.kl.settings.REPLICA_NAME
    assert b.kl.pool.get(key_b.fp).last_error == "429 per-minute quota"  # B's own note stands too


def test_two_replicas_parking_a_key_for_different_reasons_both_stand(redis, start_keyloom, fake):
    rs = replicas(start_keyloom, redis, n=2)
    a, b = rs
    fp = a.kl.pool.keys[0].fp

    async def park_a() -> None:
        a.kl.pool.exhaust(a.kl.pool.get(fp), MODEL, "daily quota")

    async def cool_b() -> None:
        b.kl.pool.cool_down(b.kl.pool.get(fp), MODEL, 3600, "per-minute quota")
    a.loop.run(park_a())
    b.loop.run(cool_b())
    tick(rs)
    for r in rs:
        ms = r.kl.pool.get(fp).models[MODEL]
        assert ms.exhausted_day == r.kl.pool.day and ms.cooldown_until > r.kl.clock.time()


def test_dashboard_reads_answer_503_while_redis_is_away_and_requests_are_still_served(redis, start_keyloom, fake):
    rs = replicas(start_keyloom, redis, n=1, ADMIN_PASSWORD="admin-password-1")
    r = rs[0]
    redis.kill()
    assert chat(r.url) == 200
    with r.http() as h:
        for path in ("/api/status", "/api/charts", "/api/requests"):
            got = h.get(path, headers=ADMIN)
            assert got.status_code == 503 and got.json()["error"]["code"] == "store_unavailable", (path, got.text)
    assert chat(r.url) == 200


def test_a_refresh_while_a_batch_waits_keeps_its_counts(redis, start_keyloom, fake):
    """Redis went away during a tick (the batch waits in memory); it is back and another replica's notice asks for
    a read before the next tick: the waiting batch is written first, its counts never dropped."""
    rs = replicas(start_keyloom, redis, n=1)
    r = rs[0]
    fp = r.kl.pool.keys[0].fp
    for _ in range(5):
        assert chat(r.url) == 200
    tick(rs)
    held = {k.fp: r.kl.pool.usage.requests(k.fp, MODEL) for k in r.kl.pool.keys}
    redis.kill()
    for _ in range(3):
        assert chat(r.url) == 200
    with pytest.raises(StoreDown):
        r.loop.run(r.kl.flusher.flush())
    assert r.kl.flusher._unsent is not None
    counted = sum(r.kl.pool.usage.requests(k.fp, MODEL) for k in r.kl.pool.keys)
    assert counted == sum(held.values()) + 3
    redis.start()
    r.loop.run(r.kl.flusher.refresh())
    assert sum(r.kl.pool.usage.requests(k.fp, MODEL) for k in r.kl.pool.keys) == counted
    assert usage_in_redis(redis) == counted and fp in held


@pytest.mark.parametrize("url, shown", [
    ("redis://:Sec/retPW99@127.0.0.1:{port}/0", None),  # a '/' the owner forgot to percent-encode
    ("redis://127.0.0.1:{port}/0?password=QuerySecret77", "QuerySecret77"),
])
def test_a_redis_url_is_never_printed_with_its_password(fake, tmp_path, url, shown):
    port = redis_server.free_port()
    p = KeyloomProcess(env={"GEMINI_API_KEYS": KEYS[0], "GEMINI_BASE_URL": fake.base_url, "PASSWORD": PASSWORD,
                            "ADMIN_PASSWORD": "admin-password-1", "REDIS_URL": url.format(port=port),
                            "REDIS_START_TIMEOUT": "0"}, data_dir=tmp_path)
    assert p.proc.wait(60) == 2
    out = p.output()
    assert "Traceback" not in out and "REDIS_URL" in out
    for secret in ("Sec/retPW99", "Sec", "retPW99", shown or "Sec/retPW99"):
        assert secret not in out, out


def test_a_redis_user_that_may_only_ping_stops_start_up_with_one_line(redis, fake, tmp_path):
    admin = redis.sync_client()
    try:
        admin.execute_command("ACL", "SETUSER", "limited", "on", ">limited-pass-1", "+ping", "~*")
    finally:
        admin.close()
    p = KeyloomProcess(env={"GEMINI_API_KEYS": KEYS[0], "GEMINI_BASE_URL": fake.base_url, "PASSWORD": PASSWORD,
                            "ADMIN_PASSWORD": "admin-password-1",
                            "REDIS_URL": f"redis://limited:limited-pass-1@127.0.0.1:{redis.port}/0"}, data_dir=tmp_path)
    assert p.proc.wait(60) == 2
    out = p.output()
    assert "failed while Keyloom read its state" in out and "Traceback" not in out
    assert "limited-pass-1" not in out


def test_a_worker_replaced_while_redis_is_away_takes_no_connection_before_it_can_serve(fake, redis, tmp_path):
    """WORKERS=2, Redis goes away, one worker is killed: its replacement waits for Redis before it binds the port,
    so every new connection meanwhile goes to the worker that serves (none hangs on one that cannot)."""
    p = KeyloomProcess(env={**proc_env(fake, redis), "WORKERS": "2", "REDIS_START_TIMEOUT": "60"},
                       data_dir=tmp_path).wait_ready()
    try:
        wait_until(lambda: "2 workers serving" in p.output(), "both workers serving")
        workers = wait_until(lambda: (c := children(p.proc.pid)) and len(c) == 2 and c, "two workers")
        redis.kill()
        with httpx.Client(timeout=20) as h:
            wait_until(lambda: chat(p.url, h) == 200 and "cannot be reached" in p.output(), "Redis noticed away")
        os.kill(min(workers), signal.SIGKILL)
        wait_until(lambda: "starting a new one" in p.output(), "the parent to start a replacement")
        statuses = []
        for _ in range(60):  # fresh connections: the kernel spreads them over every socket bound to the port
            with httpx.Client(timeout=10) as h:
                statuses.append(h.get(p.url + "/health").status_code)
        assert statuses == [200] * 60
    finally:
        p.stop(signal.SIGTERM, timeout=90)


def test_an_idle_replica_reads_the_cluster_only_every_tenth_tick(redis, start_keyloom, fake):
    """Hosted Redis plans count commands: a replica that counted nothing since its last tick lets nine ticks in
    ten pass without a read; one request, and the next tick reads again."""
    r = replicas(start_keyloom, redis, n=1)[0]
    client = redis.sync_client()

    def scripts() -> int:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    try:
        r.loop.run(r.kl.flusher.flush())  # a read asked for (not the timer's): idle from here on
        before = scripts()
        for _ in range(9):
            r.loop.run(r.kl.flusher.flush(timer=True))
        assert scripts() == before
        r.loop.run(r.kl.flusher.flush(timer=True))  # the tenth idle tick reads
        assert scripts() == before + 1
        assert chat(r.url) == 200
        r.loop.run(r.kl.flusher.flush(timer=True))  # something to write: written and read at once
        assert scripts() >= before + 3
    finally:
        client.close()


def test_a_sign_out_redis_did_not_take_can_be_tried_again_and_never_comes_back(redis, start_keyloom, fake):
    a, b = replicas(start_keyloom, redis, n=2, ADMIN_PASSWORD="admin-password-1")
    admin = AdminClient(a.url, "admin-password-1")
    cookie = admin.http.cookies.get("keyloom_session")
    with httpx.Client(timeout=20, cookies={"keyloom_session": cookie}) as other:
        wait_until(lambda: other.get(b.url + "/api/status").status_code == 200, "the session on the other replica")
        redis.stop()
        assert admin.call("POST", "logout").status_code == 503  # Redis did not take it...
        assert admin.call("POST", "logout").status_code == 503  # ...so the session still stands, and it can retry
        redis.start()
        wait_until(lambda: admin.call("POST", "logout").status_code == 200, "the sign-out, once Redis is back")
        for r in (a, b):
            wait_until(lambda r=r: other.get(r.url + "/api/status").status_code == 401, "signed out everywhere")


@pytest.mark.parametrize("mode", ["sqlite", "redis"])
def test_text_no_store_can_keep_is_a_400_in_both_modes(redis, start_keyloom, fake, mode):
    """JSON lets a client send a lone UTF-16 surrogate ("\\ud800"), which UTF-8 (SQLite, Redis) cannot hold: one
    rule for both stores, a 400, never a 500 in one mode and a stored oddity in the other."""
    kl = start_keyloom(ADMIN_PASSWORD="admin-password-1", **({"REDIS_URL": redis.url} if mode == "redis" else {}))
    odd = {"Content-Type": "application/json"}
    with kl.http(headers={**kl.auth(), **odd}) as h:
        r = h.post("/api/conversations", content=b'{"title": "a\\ud800b", "messages": []}')
        assert r.status_code == 400 and "Unicode" in r.text, r.text
        r = h.post("/api/conversations", content=b'{"messages": [{"role": "user", "content": "x\\udfffy"}]}')
        assert r.status_code == 400 and "Unicode" in r.text, r.text
    with kl.http(headers={**ADMIN, **odd}) as h:
        r = h.post("/api/client-keys", content=b'{"name": "fr\\ud800iend"}')
        assert r.status_code == 400 and "Unicode" in r.text, r.text
