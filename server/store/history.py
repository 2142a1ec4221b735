"""What the dashboard reads about the past: the request log, the daily totals, the audit trail and each key's
per-day usage. One read-only interface (`History`), two implementations: `SqliteHistory` over this process's
database, `RedisHistory` over the shared Redis, so the dashboard on any replica shows the whole cluster.

Why a seam of its own: the dashboard (server/admin/stats.py, Audit.recent, KeyNotes.history) must not know
which store is in use, and the writes (the flush tick) are a different concern owned by the store's core.
Every method returns plain Python values; the statistics that SQLite computes in SQL (percentiles, per-minute
buckets, outcomes) are computed the same way in Python for Redis, and `status_matches` is the one meaning of
the dashboard's status filters (ok, error, 4xx, 5xx, 429, a status code) for both.

Redis layout read here (docs/the design contract; written by the flush tick, prefix p = REDIS_PREFIX):
- `p requests` stream, field `row` = JSON list (ts, model, key_fp, attempts, status, latency_ms, prompt_tokens,
  completion_tokens, client_ip, stream, error, client, replica), newest last;
- `p daily` hash `"{day}\\t{outcome}"` → count;
- `p audit` stream, field `row` = JSON list (ts, client_ip, via, action, target, detail);
- `p usage:{day}` hash `"{fp}\\t{model}\\t{metric}"` → integer.

Bounded work per dashboard read in Redis: the stream reads walk the requests stream newest first in pages of
`PAGE` entries and stop after `SCAN_MAX` entries. So with more than SCAN_MAX requests in the last hour, the
last-hour count, percentiles and minute chart describe the newest SCAN_MAX requests (the cluster served more),
and a status filter that matches nothing among the newest SCAN_MAX requests shows an empty list. The
time-window reads also stop at the first page entirely older than the window (entries are in write order,
which follows time within a flush tick and a replica's clock; a replica that comes back after Redis was down
writes its older rows late, and those may be missed by a window read: they still count in the daily chart).
A key's history reads 30 usage hashes with HSCAN MATCH "{fp}\\t*" (server-side filtering; the work is the
size of those hashes, bounded by keys × models × metrics).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import ujson

from .db import Database
from .redis_backend import RedisBackend
from .requestlog import outcome

# The status filters of the request list, as SQL (SqliteHistory) and as a test on a status (RedisHistory).
STATUS_FILTERS = {"ok": "status < 400", "error": "status >= 400", "4xx": "status >= 400 AND status < 500",
                  "5xx": "status >= 500", "429": "status = 429"}
_TESTS: dict[str, Callable[[int], bool]] = {
    "ok": lambda s: s < 400, "error": lambda s: s >= 400, "4xx": lambda s: 400 <= s < 500,
    "5xx": lambda s: s >= 500, "429": lambda s: s == 429}
_CLASS = "CASE WHEN status < 400 THEN 'ok' WHEN status = 429 THEN 'limited' WHEN status < 500 THEN 'client' " \
         "ELSE 'error' END"  # the SQL twin of requestlog.outcome

PAGE = 1000        # stream entries read per round trip
SCAN_MAX = 20_000  # stream entries read at most per dashboard read (see the module docstring)
HSCAN_COUNT = 5000


def status_matches(status_filter: str | None) -> Callable[[int], bool]:
    """The test a status filter stands for: a named one, else a status code (ValueError when neither)."""
    if not status_filter:
        return lambda s: True
    test = _TESTS.get(status_filter)
    if test is not None:
        return test
    code = int(status_filter)
    return lambda s: s == code


def percentiles(latencies: list[float]) -> tuple[int, float | None, float | None]:
    """(count, p50, p95) the way SqliteHistory computes them: the value at rank ceil(q·n) (nearest rank)."""
    n = len(latencies)
    if not n:
        return 0, None, None
    ordered = sorted(latencies)
    p50, p95 = (ordered[max(0, math.ceil(q * n) - 1)] for q in (0.5, 0.95))
    return n, p50, p95


class RequestEntry(NamedTuple):
    """One row of the request log as the dashboard lists it. `id`: the SQLite row id, or the Redis stream entry
    id; `replica`: the replica that served it (None in SQLite mode, where there is one)."""
    id: int | str
    ts: float
    model: str | None
    key_fp: str | None
    attempts: int
    status: int
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    client_ip: str | None
    stream: bool
    error: str | None
    client: str | None
    replica: str | None


AuditEntry = tuple[float, str | None, str, str, str | None, str | None]  # ts, client_ip, via, action, target, detail
KeyDay = tuple[int, int, int, int]  # requests, successes, failures, tokens (prompt + completion)


class History(Protocol):
    """Read-only history for the dashboard. Times are epoch seconds; days are YYYY-MM-DD strings."""

    async def last_hour(self, since: float) -> tuple[int, float | None, float | None]:
        """Requests that arrived at or after `since`: (count, p50 latency ms, p95 latency ms)."""
        ...

    async def minutes(self, start: float) -> list[tuple[int, str, int]]:
        """(minute start, outcome, requests) for requests at or after `start`."""
        ...

    async def daily(self, since_day: str) -> list[tuple[str, str, int]]:
        """(day in TZ, outcome, requests) for days >= since_day (the daily totals, kept 400 days)."""
        ...

    async def recent_requests(self, status_filter: str | None, limit: int) -> list[RequestEntry]:
        """The newest requests first, at most `limit`, those matching the filter (see status_matches)."""
        ...

    async def audit(self, limit: int) -> list[AuditEntry]:
        """The newest audit entries first, at most `limit`."""
        ...

    async def key_days(self, fp: str, days: Sequence[str]) -> dict[str, KeyDay]:
        """A key's usage summed over models, per quota day among `days` (days without usage are left out)."""
        ...


class SqliteHistory:
    """The history in this process's SQLite database (the SQL the dashboard used to run itself)."""

    def __init__(self, db: Database):
        self.db = db

    async def last_hour(self, since: float) -> tuple[int, float | None, float | None]:
        db = self.db
        (n,), = await db.fetchall("SELECT COUNT(*) FROM request_log WHERE ts >= ?", (since,))
        if not n:
            return 0, None, None
        out = []
        for q in (0.5, 0.95):
            offset = max(0, math.ceil(q * n) - 1)
            rows = await db.fetchall("SELECT latency_ms FROM request_log WHERE ts >= ? ORDER BY latency_ms "
                                     "LIMIT 1 OFFSET ?", (since, offset))
            out.append(rows[0][0] if rows else None)
        return n, out[0], out[1]

    async def minutes(self, start: float) -> list[tuple[int, str, int]]:
        return [(int(m), kind, n) for m, kind, n in await self.db.fetchall(
            f"SELECT CAST(ts / 60 AS INTEGER) * 60 AS m, {_CLASS}, COUNT(*) FROM request_log WHERE ts >= ? "
            f"GROUP BY 1, 2", (start,))]

    async def daily(self, since_day: str) -> list[tuple[str, str, int]]:
        return [(d, k, n) for d, k, n in await self.db.fetchall(
            "SELECT day, outcome, count FROM request_daily WHERE day >= ?", (since_day,))]

    async def recent_requests(self, status_filter: str | None, limit: int) -> list[RequestEntry]:
        where, params = "", []
        if status_filter:
            if status_filter in STATUS_FILTERS:
                where = "WHERE " + STATUS_FILTERS[status_filter]
            else:
                where, params = "WHERE status = ?", [int(status_filter)]
        rows = await self.db.fetchall(
            "SELECT id, ts, model, key_fp, attempts, status, latency_ms, prompt_tokens, completion_tokens, "
            f"client_ip, stream, error, client FROM request_log {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [RequestEntry(id_, ts, model, fp, attempts, st, lat, pt, ct, ip, bool(stream), error, client, None)
                for id_, ts, model, fp, attempts, st, lat, pt, ct, ip, stream, error, client in rows]

    async def audit(self, limit: int) -> list[AuditEntry]:
        return [(ts, ip, via, a, t, d) for ts, ip, via, a, t, d in await self.db.fetchall(
            "SELECT ts, client_ip, via, action, target, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,))]

    async def key_days(self, fp: str, days: Sequence[str]) -> dict[str, KeyDay]:
        if not days:
            return {}
        wanted = set(days)
        return {day: (r, s, f, t) for day, r, s, f, t in await self.db.fetchall(
            "SELECT day, SUM(requests), SUM(successes), SUM(failures), SUM(prompt_tokens + completion_tokens) "
            "FROM key_usage WHERE key_fp = ? AND day >= ? AND day <= ? GROUP BY day", (fp, min(days), max(days)))
            if day in wanted}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisHistory:
    """The whole cluster's history in Redis (layout and bounds: the module docstring)."""

    def __init__(self, backend: RedisBackend, scan_max: int = SCAN_MAX):
        self.backend = backend
        self.scan_max = scan_max

    async def _entries(self, key: str, stop: Callable[[list[tuple[str, list[Any]]]], bool] | None = None,
                       want: int | None = None) -> list[tuple[str, list[Any]]]:
        """Stream entries newest first as (id, row), at most scan_max, page by page until `stop(page)` says the
        page was the last one needed or `want` entries were read."""
        client = self.backend.client
        name = self.backend.key(key)
        out: list[tuple[str, list[Any]]] = []
        high = "+"
        while len(out) < self.scan_max:
            count = min(PAGE, self.scan_max - len(out), want - len(out) if want else PAGE)
            raw = await client.xrevrange(name, max=high, min="-", count=count)
            if not raw:
                break
            page = []
            for entry_id, fields in raw:
                try:
                    row = ujson.loads((fields or {})[b"row"])
                except (KeyError, ValueError, TypeError):
                    continue  # a damaged entry is skipped, not shown as an error page
                if isinstance(row, list):
                    page.append((_text(entry_id), row))
            out.extend(page)
            high = "(" + _text(raw[-1][0])
            done = stop is not None and stop(page)  # always shown every page, the last one too
            if done or len(raw) < count or (want and len(out) >= want):
                break
        return out

    async def _window(self, since: float) -> list[list[Any]]:
        """Rows of requests that arrived at or after `since` (bounded: see the module docstring)."""
        def past(page: list[tuple[str, list[Any]]]) -> bool:
            return not any(_ts(row) >= since for _, row in page)
        entries = await self.backend.call("read the request log", lambda: self._entries("requests", stop=past))
        return [row for _, row in entries if _ts(row) >= since]

    async def last_hour(self, since: float) -> tuple[int, float | None, float | None]:
        latencies = []
        for row in await self._window(since):
            try:
                latencies.append(float(row[5]))
            except (IndexError, TypeError, ValueError):
                continue
        return percentiles(latencies)

    async def minutes(self, start: float) -> list[tuple[int, str, int]]:
        counts: dict[tuple[int, str], int] = {}
        for row in await self._window(start):
            status = _status(row)
            if status is None:
                continue
            k = (int(_ts(row) // 60) * 60, outcome(status))
            counts[k] = counts.get(k, 0) + 1
        return [(m, kind, n) for (m, kind), n in counts.items()]

    async def daily(self, since_day: str) -> list[tuple[str, str, int]]:
        raw = await self.backend.call("read the daily totals",
                                      lambda: self.backend.client.hgetall(self.backend.key("daily")))
        out = []
        for field, value in raw.items():
            day, _, kind = _text(field).partition("\t")
            if day >= since_day and kind:
                out.append((day, kind, int(value)))
        return out

    async def recent_requests(self, status_filter: str | None, limit: int) -> list[RequestEntry]:
        test = status_matches(status_filter)
        found: list[RequestEntry] = []

        def enough(page: list[tuple[str, list[Any]]]) -> bool:
            for entry_id, row in page:
                if len(found) >= limit:
                    break
                status = _status(row)
                if status is not None and test(status):
                    found.append(_request(entry_id, row, status))
            return len(found) >= limit
        await self.backend.call("read the request log", lambda: self._entries(
            "requests", stop=enough, want=None if status_filter else limit))
        return found

    async def audit(self, limit: int) -> list[AuditEntry]:
        entries = await self.backend.call("read the audit trail", lambda: self._entries("audit", want=limit))
        out: list[AuditEntry] = []
        for _, row in entries[:limit]:
            row = (row + [None] * 6)[:6]
            out.append((_ts(row), row[1], str(row[2] or ""), str(row[3] or ""), row[4], row[5]))
        return out

    async def key_days(self, fp: str, days: Sequence[str]) -> dict[str, KeyDay]:
        client = self.backend.client

        async def read() -> dict[str, KeyDay]:
            out: dict[str, KeyDay] = {}
            for day in days:
                sums = {"requests": 0, "successes": 0, "failures": 0, "tokens": 0}
                seen = False
                async for field, value in client.hscan_iter(self.backend.key(f"usage:{day}"), match=f"{fp}\t*",
                                                            count=HSCAN_COUNT):
                    parts = _text(field).split("\t")
                    if len(parts) != 3 or parts[0] != fp:
                        continue
                    metric = parts[2]
                    if metric in ("prompt_tokens", "completion_tokens"):
                        metric = "tokens"
                    if metric in sums:
                        sums[metric] += int(value)
                        seen = True
                if seen:
                    out[day] = (sums["requests"], sums["successes"], sums["failures"], sums["tokens"])
            return out
        result: dict[str, KeyDay] = await self.backend.call("read a key's history", read)
        return result


def _ts(row: list[Any]) -> float:
    try:
        return float(row[0])
    except (IndexError, TypeError, ValueError):
        return 0.0


def _status(row: list[Any]) -> int | None:
    try:
        return int(row[4])
    except (IndexError, TypeError, ValueError):
        return None


def _request(entry_id: str, row: list[Any], status: int) -> RequestEntry:
    """A stream row (RequestRow.as_tuple() order, then the replica) as a RequestEntry."""
    r = (row + [None] * 13)[:13]
    return RequestEntry(entry_id, _ts(r), r[1], r[2], int(r[3] or 0), status, float(r[5] or 0.0), int(r[6] or 0),
                        int(r[7] or 0), r[8], bool(r[9]), r[10], r[11], r[12])
