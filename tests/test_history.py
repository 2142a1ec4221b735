"""server/store/history.py: the dashboard's reads about the past give the same answers from SQLite and from Redis.

The same data is written to both stores in their own formats (SQLite rows as the flush writes them, Redis
entries in the layout of the design contract, written here with a redis client since the flush tick is the
core's) and the same assertions run against `SqliteHistory` and `RedisHistory` (a real redis-server)."""
from __future__ import annotations

import asyncio
import functools
import math
from pathlib import Path
from typing import Any

import pytest
import ujson

from server.store.db import Database
from server.store.history import RedisHistory, SqliteHistory, status_matches
from server.store.redis_backend import RedisBackend
from server.store.requestlog import RequestRow, outcome

NOW = 1_700_000_000.0  # a fixed "now": the history never reads the clock itself
PREFIX = "kltest:"
FP, OTHER = "0123456789ab", "ba9876543210"


def _requests() -> list[tuple[RequestRow, str]]:
    """In write order (oldest first): two rows older than the hour, then 24 within it, of every outcome."""
    rows: list[tuple[RequestRow, str]] = []
    for i, lat in enumerate((5000.0, 7000.0)):
        rows.append((RequestRow(NOW - 7200 + i, "gemini-old", FP, 1, 200, lat, 1, 1, "10.0.0.9", False, None), "r1"))
    statuses = [200, 200, 429, 200, 404, 500, 200, 400, 200, 503, 200, 429, 200, 200, 401, 200, 200, 502, 200, 200,
                200, 404, 200, 200]
    for i, status in enumerate(statuses):
        ts = NOW - 3500 + i * 140  # spread across the hour (several per some minutes, none in others)
        error = None if status < 400 else f"upstream said {status}"
        rows.append((RequestRow(ts, f"gemini-{i % 3}", FP if i % 2 else OTHER, 1 + i % 2, status, 10.0 * (i + 1),
                                i, 2 * i, f"10.0.0.{i}", bool(i % 2), error, "friend" if i % 5 == 0 else None),
                     "r1" if i % 2 else "r2"))
    return rows


DAILY = [("2023-11-10", "ok", 5), ("2023-11-10", "error", 1), ("2023-11-13", "ok", 40), ("2023-11-13", "limited", 2),
         ("2023-11-14", "client", 3), ("2023-11-14", "ok", 17), ("2023-10-01", "ok", 99)]
AUDIT = [(NOW - 300 + i, f"10.1.0.{i}", "session" if i % 2 else "bearer", f"action_{i}", f"t{i}", f"detail {i}")
         for i in range(7)]
# (day, fp, model, requests, successes, failures, prompt_tokens, completion_tokens)
USAGE = [("2023-11-12", FP, "gemini-a", 10, 8, 2, 100, 50), ("2023-11-12", FP, "gemini-b", 3, 3, 0, 7, 3),
         ("2023-11-13", FP, "gemini-a", 1, 0, 1, 0, 0), ("2023-11-13", OTHER, "gemini-a", 50, 50, 0, 9, 9),
         ("2023-11-14", OTHER, "gemini-a", 4, 4, 0, 1, 1), ("2023-10-01", FP, "gemini-a", 9, 9, 0, 9, 9)]


async def fill_sqlite(db: Database) -> None:
    reqs = _requests()
    await db.write([
        ("INSERT INTO request_log (ts, model, key_fp, attempts, status, latency_ms, prompt_tokens, "
         "completion_tokens, client_ip, stream, error, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
         [r.as_tuple() for r, _ in reqs]),
        ("INSERT INTO request_daily (day, outcome, count) VALUES (?, ?, ?)", DAILY),
        ("INSERT INTO audit (ts, client_ip, via, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)", AUDIT),
        ("INSERT INTO key_usage (day, key_fp, model, requests, successes, failures, prompt_tokens, "
         "completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", USAGE),
        ("INSERT INTO key_failures (day, key_fp, model, kind, count) VALUES (?, ?, ?, ?, ?)",
         [("2023-11-12", FP, "gemini-a", "Overloaded", 2)])])


async def fill_redis(backend: RedisBackend) -> None:
    """The design contract's layout, as the flush tick writes it."""
    r = backend.client
    for row, replica in _requests():
        await r.xadd(backend.key("requests"), {"row": ujson.dumps([*row.as_tuple(), replica])})
    for day, kind, n in DAILY:
        await r.hincrby(backend.key("daily"), f"{day}\t{kind}", n)
    for entry in AUDIT:
        await r.xadd(backend.key("audit"), {"row": ujson.dumps(list(entry))})
    for day, fp, model, *values in USAGE:
        for metric, n in zip(("requests", "successes", "failures", "prompt_tokens", "completion_tokens"), values,
                             strict=True):
            await r.hincrby(backend.key(f"usage:{day}"), f"{fp}\t{model}\t{metric}", n)
    await r.hincrby(backend.key("usage:2023-11-12"), f"{FP}\tgemini-a\tf:Overloaded", 2)



@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Which implementation a test runs against; the redis server is started only for the redis runs."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        return server.url
    return str(tmp_path / "history.sqlite3")


def on_own_loop(test: Any) -> Any:
    """Run an async test on a loop of its own that asyncio.run opens and closes (pytest-tornado's io_loop once
    left its loop's self-pipe to the garbage collector in a long run, which then failed an unrelated test)."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(test(*args, **kwargs))
    return run


async def opened(store: str, scan_max: int | None = None) -> tuple[Any, Any]:
    """(history, closer) over the store filled with the test data."""
    if store.startswith("redis://"):
        backend = RedisBackend(store, PREFIX, replica="test")
        await fill_redis(backend)
        history: Any = RedisHistory(backend) if scan_max is None else RedisHistory(backend, scan_max=scan_max)
        return history, backend.client.aclose
    db = Database(Path(store))
    await db.open()
    await fill_sqlite(db)
    return SqliteHistory(db), db.close


def expected_within(since: float) -> list[RequestRow]:
    return [r for r, _ in _requests() if r.ts >= since]


@on_own_loop
async def test_last_hour_count_and_percentiles(store):
    history, close = await opened(store)
    try:
        latencies = sorted(r.latency_ms for r in expected_within(NOW - 3600))
        n = len(latencies)
        assert n == 24
        assert await history.last_hour(NOW - 3600) == (
            n, latencies[math.ceil(0.5 * n) - 1], latencies[math.ceil(0.95 * n) - 1])
        assert await history.last_hour(NOW - 7200) == (26, 130.0, 5000.0)  # the two old ones count now
        assert await history.last_hour(NOW + 1) == (0, None, None)
    finally:
        await close()


@on_own_loop
async def test_minute_chart(store):
    history, close = await opened(store)
    try:
        start = NOW - 3600
        want: dict[tuple[int, str], int] = {}
        for r in expected_within(start):
            k = (int(r.ts // 60) * 60, outcome(r.status))
            want[k] = want.get(k, 0) + 1
        got = {(m, kind): n for m, kind, n in await history.minutes(start)}
        assert got == want
        assert {kind for _, kind in got} == {"ok", "limited", "client", "error"}
    finally:
        await close()


@on_own_loop
async def test_daily_chart(store):
    history, close = await opened(store)
    try:
        assert sorted(await history.daily("2023-11-10")) == sorted(d for d in DAILY if d[0] >= "2023-11-10")
        assert sorted(await history.daily("2023-11-14")) == [("2023-11-14", "client", 3), ("2023-11-14", "ok", 17)]
        assert await history.daily("2024-01-01") == []
    finally:
        await close()


@pytest.mark.parametrize("status_filter", [None, "ok", "error", "4xx", "5xx", "429", "404", "503", "418"])
@on_own_loop
async def test_status_filters_mean_the_same(store, status_filter):
    history, close = await opened(store)
    try:
        test = status_matches(status_filter)
        newest_first = [(r, replica) for r, replica in reversed(_requests()) if test(r.status)]
        for limit in (3, 100):
            got = await history.recent_requests(status_filter, limit)
            want = newest_first[:limit]
            assert [(e.ts, e.status, e.model, e.key_fp, e.latency_ms, e.client, e.stream, e.error, e.client_ip,
                     e.prompt_tokens, e.completion_tokens, e.attempts) for e in got] == \
                   [(r.ts, r.status, r.model, r.key_fp, round(r.latency_ms, 2), r.client, r.stream, r.error,
                     r.client_ip, r.prompt_tokens, r.completion_tokens, r.attempts) for r, _ in want]
            # the replica that served each: Redis knows it, SQLite (one process) says None
            assert [e.replica for e in got] == [replica if isinstance(history, RedisHistory) else None
                                                for _, replica in want]
            assert len({e.id for e in got}) == len(got)
        if status_filter == "418":
            assert await history.recent_requests(status_filter, 10) == []
    finally:
        await close()


def test_the_filters_themselves():
    assert [s for s in (200, 399, 400, 404, 429, 499, 500, 503) if status_matches("4xx")(s)] == [400, 404, 429, 499]
    assert [s for s in (200, 404, 429, 500) if status_matches("error")(s)] == [404, 429, 500]
    assert [s for s in (200, 404, 429, 500) if status_matches("429")(s)] == [429]
    assert [s for s in (200, 404, 503) if status_matches("503")(s)] == [503]
    with pytest.raises(ValueError):
        status_matches("teapot")


@on_own_loop
async def test_audit_newest_first(store):
    history, close = await opened(store)
    try:
        assert await history.audit(100) == list(reversed(AUDIT))
        assert await history.audit(3) == list(reversed(AUDIT))[:3]
    finally:
        await close()


@on_own_loop
async def test_key_days(store):
    history, close = await opened(store)
    try:
        days = ["2023-11-11", "2023-11-12", "2023-11-13", "2023-11-14"]
        assert await history.key_days(FP, days) == {"2023-11-12": (13, 11, 2, 160), "2023-11-13": (1, 0, 1, 0)}
        assert await history.key_days(OTHER, days) == {"2023-11-13": (50, 50, 0, 18), "2023-11-14": (4, 4, 0, 2)}
        assert await history.key_days("ffffffffffff", days) == {}
    finally:
        await close()


@on_own_loop
async def test_redis_reads_are_bounded(redis_server):
    """At most scan_max stream entries per read: the window counts only the newest of them."""
    redis_server.flush()
    history, close = await opened(redis_server.url, scan_max=10)
    try:
        n, _, _ = await history.last_hour(NOW - 3600)
        assert n == 10
        newest_ten = [r for r, _ in reversed(_requests())][:10]
        assert [e.ts for e in await history.recent_requests("ok", 100)] == [r.ts for r in newest_ten if r.status < 400]
    finally:
        await close()


def test_the_dashboard_on_any_replica_shows_every_replicas_requests(start_keyloom, redis_server):
    """Through the real HTTP path: two Keyloom instances on one Redis, a request through each; each dashboard
    lists both (with the replica that served it), counts both in the last hour and shows both audit sign-ins."""
    from tests.support.admin import AdminClient
    from tests.support.wait import wait_until

    redis_server.flush()
    password = "admin-password-for-history"
    a = start_keyloom(REDIS_URL=redis_server.url, REPLICA_NAME="replica-a", ADMIN_PASSWORD=password)
    b = start_keyloom(REDIS_URL=redis_server.url, REPLICA_NAME="replica-b", ADMIN_PASSWORD=password)
    for kl, model in ((a, "gemini-2.5-flash"), (b, "gemini-2.5-pro")):
        kl.client().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    admins = [AdminClient(kl.url, password) for kl in (a, b)]
    try:
        for admin in admins:
            def both(admin: AdminClient = admin) -> list[dict[str, Any]] | None:
                rows = admin.ok("GET", "requests")["requests"]
                return rows if len(rows) >= 2 else None
            rows = wait_until(both, "both replicas' requests on the dashboard")
            assert {(r["replica"], r["model"]) for r in rows} >= {("replica-a", "gemini-2.5-flash"),
                                                                  ("replica-b", "gemini-2.5-pro")}
            assert admin.ok("GET", "requests?status=5xx")["requests"] == []
            assert admin.ok("GET", "status")["service"]["requests_last_hour"] >= 2
            assert sum(admin.ok("GET", "charts")["minutes"]["series"]["ok"]) >= 2
        logins = [e for e in admins[0].ok("GET", "audit")["audit"] if e["action"] == "login"]
        assert len(logins) >= 2  # a's and b's sign-ins, on a's page
    finally:
        for admin in admins:
            admin.close()
