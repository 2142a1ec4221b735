"""The storage seam of what the request path counts and decides from: one interface, two implementations.

The request path never waits on storage: the pool, the client limits and the client keys count in memory.
Each flush tick (FLUSH_INTERVAL) the Flusher hands the store one `Batch` of what changed: counter *deltas*
(never absolute values, so several processes can add into one total), the latest key states, the request-log
and audit rows. The store writes it atomically and, when other processes write into the same totals
(`shared`), returns today's `Totals` so each process decides from the cluster's counts within one tick.

- `SqliteCounters` (here): one process, the SQLite file in DATA_DIR. Its totals are the process's own, so it
  returns none.
- `RedisCounters` (server/store/redis_counters.py): every process with the same REDIS_URL.

A batch that fails to write is kept whole and sent again first at the next tick, under the same id: SQLite
rolled it back, Redis remembers the ids it applied, so a batch is never counted twice nor lost (beyond what
a crash takes between two ticks).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..pool.quota import Usage
from .db import Database
from .requestlog import RequestRow

# (day, key_fp, model, delta)
UsageDelta = tuple[str, str, str, Usage]


@dataclass
class Batch:
    """What changed since the last tick. Counters are deltas; states are the newest values."""

    id: str
    usage: list[UsageDelta] = field(default_factory=list)
    key_states: list[tuple[Any, ...]] = field(default_factory=list)    # (fp, reason, at, backoff…, last_error…)
    disabled: list[str] = field(default_factory=list)  # keys whose disabled/enabled state this process changed
    model_states: list[tuple[Any, ...]] = field(default_factory=list)  # (fp, model, cooldown, exhausted_day, why)
    learned: list[tuple[Any, ...]] = field(default_factory=list)       # (fp, model, per_day, per_min, tpm, at)
    projects: list[tuple[Any, ...]] = field(default_factory=list)      # (fp, project)
    clients: list[tuple[str, str, int]] = field(default_factory=list)  # (day, ip, delta)
    client_keys: list[tuple[str, str, str, int, int]] = field(default_factory=list)  # (day, id, model, Δreq, Δtok)
    requests: list[RequestRow] = field(default_factory=list)
    daily: list[tuple[str, str, int]] = field(default_factory=list)    # (day in TZ, outcome, delta)
    audit: list[tuple[Any, ...]] = field(default_factory=list)         # (ts, ip, via, action, target, detail)
    minutes: list[tuple[int, str, int]] = field(default_factory=list)  # (minute, limit name, delta): shared only

    def size(self) -> int:
        return len(self.usage) + sum(len(u.failure_kinds) for *_, u in self.usage) + len(self.key_states) + \
            len(self.model_states) + len(self.learned) + len(self.projects) + len(self.clients) + \
            len(self.client_keys) + len(self.requests) + len(self.audit) + len(self.minutes)


@dataclass
class States:
    """Key states as stored: what start-up reads back, and what a shared store hands over when others changed
    them."""

    keys: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    models: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    learned: list[tuple[Any, ...]] = field(default_factory=list)
    projects: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Totals:
    """Today's counts in the store, everyone's (after this process's batch was added)."""

    day: str
    usage: dict[tuple[str, str], Usage] = field(default_factory=dict)
    clients: dict[str, int] = field(default_factory=dict)
    client_keys: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    minutes: dict[tuple[int, str], int] = field(default_factory=dict)  # per-minute limits' counts, this and last
    states: States | None = None  # None: no other process changed a key state since the last read


@dataclass
class Snapshot:
    """What start-up reads back."""

    totals: Totals
    states: States
    newest: float | None  # the newest request-log or audit time found (pruning trusts no clock jump beyond it)


@dataclass(frozen=True)
class Cuts:
    """What pruning may drop (each an epoch time or a day string, computed by the flusher from trusted time)."""

    now: float
    requests_before: float
    max_requests: int
    clients_before_day: str
    daily_before_day: str
    audit_before: float
    quota_day: str
    learned_before: float


class CounterStore(Protocol):
    shared: bool  # several processes add into the same totals

    async def load(self, day: str, client_ips: Sequence[str] = ()) -> Snapshot: ...

    async def write(self, batch: Batch, day: str, client_ips: Sequence[str] = (),
                    minutes: Sequence[int] = ()) -> Totals | None:
        """Apply the batch (all of it or none); → today's totals when `shared`, else None. `client_ips`: the
        addresses whose daily counts this process holds (a shared store reads back only those); `minutes`: the
        minutes whose per-minute counts to read back."""

    async def read(self, day: str, client_ips: Sequence[str] = (), minutes: Sequence[int] = ()) -> Totals | None:
        """Today's totals now (a shared store), without writing; None when the process's own are the totals."""

    async def prune(self, cuts: Cuts) -> None: ...

    async def reset_key_day(self, day: str, fp: str) -> None:
        """The owner's "use it again today": the key's counts of the quota day go back to 0."""


# -- SQLite -----------------------------------------------------------------------------------------------

ADD_USAGE = (
    "INSERT INTO key_usage (day, key_fp, model, requests, successes, failures, prompt_tokens, completion_tokens) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, key_fp, model) DO UPDATE SET "
    "requests = requests + excluded.requests, successes = successes + excluded.successes, "
    "failures = failures + excluded.failures, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens")
ADD_FAILURES = (
    "INSERT INTO key_failures (day, key_fp, model, kind, count) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (day, key_fp, model, kind) DO UPDATE SET count = count + excluded.count")
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
ADD_CLIENT = (
    "INSERT INTO client_usage (day, ip, requests) VALUES (?, ?, ?) "
    "ON CONFLICT (day, ip) DO UPDATE SET requests = requests + excluded.requests")
INSERT_REQUEST = (
    "INSERT INTO request_log (ts, model, key_fp, attempts, status, latency_ms, prompt_tokens, completion_tokens, "
    "client_ip, stream, error, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
ADD_CLIENT_KEY_USAGE = (
    "INSERT INTO client_key_usage (day, key_id, model, requests, tokens) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (day, key_id, model) DO UPDATE SET requests = requests + excluded.requests, "
    "tokens = tokens + excluded.tokens")
ADD_DAILY = (
    "INSERT INTO request_daily (day, outcome, count) VALUES (?, ?, ?) "
    "ON CONFLICT (day, outcome) DO UPDATE SET count = count + excluded.count")
INSERT_AUDIT = "INSERT INTO audit (ts, client_ip, via, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)"


class SqliteCounters:
    """One process, one SQLite file: the batch is one transaction."""

    shared = False

    def __init__(self, db: Database):
        self.db = db

    async def load(self, day: str, client_ips: Sequence[str] = ()) -> Snapshot:
        db = self.db
        totals = Totals(day)
        for fp, model, req, ok, fail, pt, ct in await db.fetchall(
                "SELECT key_fp, model, requests, successes, failures, prompt_tokens, completion_tokens "
                "FROM key_usage WHERE day = ?", (day,)):
            totals.usage[(fp, model)] = Usage(req, ok, fail, pt, ct)
        for fp, model, kind, count in await db.fetchall(
                "SELECT key_fp, model, kind, count FROM key_failures WHERE day = ?", (day,)):
            totals.usage.setdefault((fp, model), Usage()).failure_kinds[kind] = count
        totals.clients = {ip: n for ip, n in await db.fetchall(
            "SELECT ip, requests FROM client_usage WHERE day = ?", (day,))}
        totals.client_keys = {(k, m): (r, t) for k, m, r, t in await db.fetchall(
            "SELECT key_id, model, requests, tokens FROM client_key_usage WHERE day = ?", (day,))}
        states = States(
            {row[0]: tuple(row[1:]) for row in await db.fetchall(
                "SELECT key_fp, disabled_reason, disabled_at, backoff_until, backoff_failures, last_error, "
                "last_error_at FROM key_state")},
            {(row[0], row[1]): tuple(row[2:]) for row in await db.fetchall(
                "SELECT key_fp, model, cooldown_until, exhausted_day, reason FROM key_model_state")},
            await db.fetchall("SELECT key_fp, model, per_day, per_minute, tokens_per_minute, learned_at "
                              "FROM key_learned_limit"),
            await db.fetchall("SELECT key_fp, project FROM key_project"))
        newest = [t for t, in await db.fetchall(
            "SELECT MAX(ts) FROM request_log UNION ALL SELECT MAX(ts) FROM audit") if t is not None]
        return Snapshot(totals, states, max(newest) if newest else None)

    async def write(self, batch: Batch, day: str, client_ips: Sequence[str] = (),
                    minutes: Sequence[int] = ()) -> Totals | None:
        await self.db.write([
            (ADD_USAGE, [(d, fp, m, u.requests, u.successes, u.failures, u.prompt_tokens, u.completion_tokens)
                         for d, fp, m, u in batch.usage]),
            (ADD_FAILURES, [(d, fp, m, kind, n) for d, fp, m, u in batch.usage for kind, n in u.failure_kinds.items()]),
            (UPSERT_KEY_STATE, batch.key_states), (UPSERT_MODEL_STATE, batch.model_states),
            (UPSERT_LEARNED, batch.learned), (UPSERT_PROJECT, batch.projects),
            (ADD_CLIENT, batch.clients), (INSERT_REQUEST, [r.as_tuple() for r in batch.requests]),
            (ADD_DAILY, batch.daily), (INSERT_AUDIT, batch.audit),
            (ADD_CLIENT_KEY_USAGE, batch.client_keys)])
        return None

    async def read(self, day: str, client_ips: Sequence[str] = (), minutes: Sequence[int] = ()) -> Totals | None:
        return None

    async def prune(self, cuts: Cuts) -> None:
        await self.db.write([
            ("DELETE FROM request_log WHERE ts < ?", [(cuts.requests_before,)]),
            ("DELETE FROM request_log WHERE id <= (SELECT id FROM request_log ORDER BY id DESC LIMIT 1 OFFSET ?)",
             [(cuts.max_requests,)]),
            ("DELETE FROM client_usage WHERE day < ?", [(cuts.clients_before_day,)]),
            ("DELETE FROM request_daily WHERE day < ?", [(cuts.daily_before_day,)]),
            # client keys' usage: what the dashboard's history shows (30 days), kept as long as the daily totals
            ("DELETE FROM client_key_usage WHERE day < ?", [(cuts.daily_before_day,)]),
            ("DELETE FROM admin_session WHERE expires_at < ?", [(cuts.now,)]),
            ("DELETE FROM chat_session WHERE expires_at < ?", [(cuts.now,)]),
            ("DELETE FROM audit WHERE ts < ?", [(cuts.audit_before,)]),
            ("DELETE FROM key_model_state WHERE (exhausted_day IS NULL OR exhausted_day < ?) "
             "AND (cooldown_until IS NULL OR cooldown_until < ?)", [(cuts.quota_day, cuts.now)]),
            ("DELETE FROM key_learned_limit WHERE learned_at < ?", [(cuts.learned_before,)]),
        ])

    async def reset_key_day(self, day: str, fp: str) -> None:
        await self.db.write([("DELETE FROM key_usage WHERE day = ? AND key_fp = ?", [(day, fp)]),
                             ("DELETE FROM key_failures WHERE day = ? AND key_fp = ?", [(day, fp)])])
