"""Copy a SQLite DATA_DIR into Redis, or Redis back into a SQLite DATA_DIR:

    python -m server.store.migrate --to-redis      # DATA_DIR's database → REDIS_URL (under REDIS_PREFIX)
    python -m server.store.migrate --from-redis    # REDIS_URL → DATA_DIR's database
    … --force                                      # replace a target that already holds data

Why a command and not something Keyloom does at start: moving a pool from one process on SQLite to replicas on
Redis (or back) is a one-time decision of the operator, made while Keyloom is stopped; doing it implicitly would
count twice whatever was already in the target. So the command takes DATA_DIR's lock (no Keyloom may be running
on it), refuses a target that already holds data, and with --force empties the target first, so the target
ends up equal to the source, never a sum of both.

Settings are read from the environment like Keyloom reads them: DATA_DIR, REDIS_URL, REDIS_PREFIX,
REQUEST_LOG_MAX_ROWS (the newest rows of the request log are copied, at most that many), KEY_ENCRYPTION_SECRET
(keys added on the dashboard are stored encrypted in Redis; without the secret the command refuses to copy
them rather than leave them behind), RESPONSES_STORE_DAYS and REPLICA_NAME (the replica written on request-log
rows copied into Redis).

What is copied (SQLite table → Redis layout, documented in server/store/history.py, the design contract and
each Redis store's module docstring):
- key_usage + key_failures → `usage:{day}`; client_usage → `clients:{day}`; client_key_usage → `ckusage:{day}`;
  request_daily → `daily`; key_state → `keystate`; key_model_state → `modelstate`; key_learned_limit →
  `learned`; key_project → `project`; request_log → `requests` stream; audit → `audit` stream;
- admin_session, chat_session and their signing secrets (meta) → `session:{table}`, `meta`;
  setting_override → `settings`; stored_key (encrypted) / removed_key / key_note → `storedkey`, `removedkey`,
  `keynote`; conversation → `conv:…`; stored_response → `resp:…`; client_key → `clientkey`.
Not copied: what only one side has (Redis's `applied:{writer}` batch marks, `statever` is raised so replicas
read the states; SQLite's schema_migrations), and sessions or stored answers already past their end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import ujson
from redis.exceptions import RedisError

from ..redact import Redactor, fingerprint
from ..settings import Settings, SettingsError, resolve_data_dir
from .db import DB_FILE, Database
from .lock import DataDirBusy, DataDirLock
from .redis_backend import RedisBackend, safe_url, url_problem, url_secrets

USAGE_METRICS = ("requests", "successes", "failures", "prompt_tokens", "completion_tokens")
DAY_TTL = 400 * 86400    # the TTLs the flush tick gives the per-day hashes (server/store/redis_counters.py)
CLIENTS_TTL = 3 * 86400
CHUNK = 1000           # commands per pipeline round trip
SESSION_TABLES = {"admin_session": "session_secret", "chat_session": "chat_session_secret"}
# Every table this command writes on the SQLite side (what --force empties there, and what "non-empty" means).
SQLITE_TABLES = ("key_usage", "key_failures", "client_usage", "client_key_usage", "request_daily", "key_state",
                 "key_model_state", "key_learned_limit", "key_project", "request_log", "audit", "admin_session",
                 "chat_session", "setting_override", "stored_key", "removed_key", "key_note", "conversation",
                 "stored_response", "client_key")
NOT_COPIED: tuple[str, ...] = ()  # tables with no Redis layout (none left; the command names any it skips)
CLIENT_KEY_COLUMNS = ("id", "name", "key_hash", "prefix", "daily_requests", "daily_tokens", "rpm", "models", "expires",
                      "enabled", "created_at")  # client_keys.STORED, in the table's order


class MigrationRefused(RuntimeError):
    """The copy cannot be made as asked; the message says why and what to do."""


def _s(v: Any) -> str:
    return v.decode("utf-8", "surrogatepass") if isinstance(v, bytes) else str(v)


class _Writer:
    """Redis commands queued on `p` and sent in pipelines of CHUNK (no transaction: the target is empty, and
    --force emptied it). Queue a command on `w.p`, then `await w.tick()`."""

    def __init__(self, backend: RedisBackend):
        self.p: Any = backend.client.pipeline(transaction=False)
        self.n = 0

    async def tick(self) -> None:
        self.n += 1
        if self.n % CHUNK == 0:
            await self.p.execute()

    async def done(self) -> None:
        await self.p.execute()


def _json(value: Any) -> str:
    return ujson.dumps(value, ensure_ascii=False)


# -- SQLite → Redis ----------------------------------------------------------------------------------------------

async def to_redis(db: Database, backend: RedisBackend, settings: Settings) -> dict[str, int]:
    """Copy every covered table; returns rows copied per table."""
    k = backend.key
    w = _Writer(backend)
    p = w.p
    counts: dict[str, int] = {}
    days: set[str] = set()

    async def rows(table: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        found = await db.fetchall(sql, params)
        counts[table] = len(found)
        return found

    for day, fp, model, *values in await rows(
            "key_usage", "SELECT day, key_fp, model, " + ", ".join(USAGE_METRICS) + " FROM key_usage"):
        days.add(f"usage:{day}")
        p.hset(k(f"usage:{day}"), mapping={f"{fp}\t{model}\t{m}": int(v)
                                           for m, v in zip(USAGE_METRICS, values, strict=True)})
        await w.tick()
    for day, fp, model, kind, n in await rows("key_failures",
                                              "SELECT day, key_fp, model, kind, count FROM key_failures"):
        days.add(f"usage:{day}")
        p.hset(k(f"usage:{day}"), f"{fp}\t{model}\tf:{kind}", int(n))
        await w.tick()
    for day, ip, n in await rows("client_usage", "SELECT day, ip, requests FROM client_usage"):
        days.add(f"clients:{day}")
        p.hset(k(f"clients:{day}"), ip, int(n))
        await w.tick()
    for day, key_id, model, req, tok in await rows(
            "client_key_usage", "SELECT day, key_id, model, requests, tokens FROM client_key_usage"):
        days.add(f"ckusage:{day}")
        p.hset(k(f"ckusage:{day}"), mapping={f"{key_id}\t{model}\trequests": int(req),
                                             f"{key_id}\t{model}\ttokens": int(tok)})
        await w.tick()
    for day, kind, n in await rows("request_daily", "SELECT day, outcome, count FROM request_daily"):
        p.hset(k("daily"), f"{day}\t{kind}", int(n))
        await w.tick()
    for fp, *rest in await rows("key_state", "SELECT key_fp, disabled_reason, disabled_at, backoff_until, "
                                "backoff_failures, last_error, last_error_at FROM key_state"):
        p.hset(k("keystate"), fp, _json(rest[2:]))      # health: back-off, last error (redis_counters.py)
        p.hset(k("keydisabled"), fp, _json(rest[:2]))   # whether it is disabled, and since when
        await w.tick()
    for fp, model, *rest in await rows("key_model_state", "SELECT key_fp, model, cooldown_until, exhausted_day, "
                                       "reason FROM key_model_state"):
        p.hset(k("modelstate"), f"{fp}\t{model}", _json(rest))
        await w.tick()
    for fp, model, *rest in await rows("key_learned_limit", "SELECT key_fp, model, per_day, per_minute, "
                                       "tokens_per_minute, learned_at FROM key_learned_limit"):
        p.hset(k("learned"), f"{fp}\t{model}", _json(rest))
        await w.tick()
    for fp, project in await rows("key_project", "SELECT key_fp, project FROM key_project"):
        p.hset(k("project"), fp, project)
        await w.tick()
    # stream entry ids from the rows' own times, so pruning by age (XTRIM MINID) treats copied rows as it treats
    # rows written live
    request_ids, audit_ids = StreamIds(), StreamIds()
    # the request log: its newest REQUEST_LOG_MAX_ROWS rows, oldest first (the stream's order), each followed by
    # the replica name (REPLICA_NAME, else the host name) as the flush tick writes it
    for row in reversed(await rows(
            "request_log", "SELECT ts, model, key_fp, attempts, status, latency_ms, prompt_tokens, completion_tokens, "
            "client_ip, stream, error, client FROM request_log ORDER BY id DESC LIMIT ?",
            (settings.REQUEST_LOG_MAX_ROWS,))):
        p.xadd(k("requests"), {"row": _json([*row, backend.replica])}, id=request_ids.at(row[0]))
        await w.tick()
    for row in await rows("audit", "SELECT ts, client_ip, via, action, target, detail FROM audit ORDER BY id"):
        p.xadd(k("audit"), {"row": _json(list(row))}, id=audit_ids.at(row[0]))
        await w.tick()
    await _sessions_to(db, w, backend, counts)
    for name, *rest in await rows("setting_override", "SELECT name, value, env_value, env_source, changed_at "
                                  "FROM setting_override"):
        p.hset(k("settings"), name, _json(rest))
        await w.tick()
    for fp, at in await rows("removed_key", "SELECT key_fp, removed_at FROM removed_key"):
        p.hset(k("removedkey"), fp, repr(float(at)))
        await w.tick()
    for fp, note, tags, at, updated in await rows(
            "key_note", "SELECT key_fp, note, tags, disabled_by_hand_at, updated_at FROM key_note"):
        p.hset(k("keynote"), fp, _json([note, ujson.loads(tags), at, updated]))
        await w.tick()
    await _conversations_to(db, w, backend, counts)
    await _responses_to(db, w, backend, settings, counts)
    for row in await rows("client_key", f"SELECT {', '.join(CLIENT_KEY_COLUMNS)} FROM client_key"):
        doc = dict(zip(CLIENT_KEY_COLUMNS, row, strict=True))
        doc["models"] = json.loads(doc["models"] or "[]")
        doc["enabled"] = bool(doc["enabled"])
        p.hset(k("clientkey"), doc["id"], ujson.dumps(doc))  # as RedisClientKeyStore.put writes it
        await w.tick()
    for name in days:
        p.expire(k(name), CLIENTS_TTL if name.startswith("clients:") else DAY_TTL)
        await w.tick()
    p.incr(k("statever"))  # replicas read key states back when this moves
    await w.done()
    counts["stored_key"] = await _stored_keys_to(db, backend, settings)
    return counts


async def _sessions_to(db: Database, w: _Writer, backend: RedisBackend, counts: dict[str, int]) -> None:
    now = time.time()
    for table, secret_name in SESSION_TABLES.items():
        index = backend.key("session", table)
        kept = 0
        for token_hash, csrf, created, expires, ip in await db.fetchall(
                f"SELECT token_hash, csrf, created_at, expires_at, client_ip FROM {table}"):
            ttl = math.ceil(expires - now)
            if ttl <= 0:
                continue  # ended: Redis would drop it at once anyway
            kept += 1
            w.p.set(f"{index}:{token_hash}", ujson.dumps([csrf, created, expires, ip]), ex=ttl)
            w.p.zadd(index, {token_hash: expires})
            await w.tick()
        counts[table] = kept
        for value, in await db.fetchall("SELECT value FROM meta WHERE name = ?", (secret_name,)):
            w.p.hset(backend.key("meta"), secret_name, value)
            await w.tick()


async def _conversations_to(db: Database, w: _Writer, backend: RedisBackend, counts: dict[str, int]) -> None:
    rows = await db.fetchall("SELECT id, title, model, params, messages, search_text, created_at, updated_at, bytes "
                             "FROM conversation")
    total = 0
    for cid, title, model, params, messages, search, created, updated, size in rows:
        fields: dict[str, Any] = {
            "title": title.encode("utf-8", "surrogatepass"), "params": params, "messages": messages,
            "search": search.encode("utf-8", "surrogatepass"), "bytes": int(size),
            "count": len(ujson.loads(messages)), "created_at": repr(float(created)), "updated_at": repr(float(updated))}
        if model is not None:
            fields["model"] = model.encode("utf-8", "surrogatepass")
        total += int(size)
        w.p.hset(backend.key("conv", "id", cid), mapping=fields)
        w.p.zadd(backend.key("conv", "ids"), {cid: float(updated)})
        await w.tick()
    if rows:
        w.p.set(backend.key("conv", "bytes"), total)
    counts["conversation"] = len(rows)


async def _responses_to(db: Database, w: _Writer, backend: RedisBackend, settings: Settings,
                        counts: dict[str, int]) -> None:
    keep_for = settings.RESPONSES_STORE_DAYS * 86400
    now = time.time()
    total = kept = 0
    for rid, created, response, context, size in await db.fetchall(
            "SELECT id, created_at, response, context, bytes FROM stored_response"):
        ttl_ms = int((float(created) + keep_for - now) * 1000)
        if ttl_ms <= 0:
            continue  # past RESPONSES_STORE_DAYS: the store would not return it
        kept += 1
        total += int(size)
        key = backend.key("resp", "id", rid)
        w.p.hset(key, mapping={"response": response, "context": context, "created_at": repr(float(created))})
        w.p.pexpire(key, ttl_ms)
        w.p.zadd(backend.key("resp", "ids"), {rid: float(created)})
        w.p.hset(backend.key("resp", "sizes"), rid, int(size))
        await w.tick()
    if kept:
        w.p.set(backend.key("resp", "bytes"), total)
    counts["stored_response"] = kept


async def _stored_keys_to(db: Database, backend: RedisBackend, settings: Settings) -> int:
    """Keys added on the dashboard, sealed with KEY_ENCRYPTION_SECRET by the Redis key store itself."""
    rows = await db.fetchall("SELECT key_fp, secret, added_at FROM stored_key ORDER BY added_at")
    if not rows:
        return 0
    from .redis_keys import RedisKeyStore
    store = RedisKeyStore(backend, settings.KEY_ENCRYPTION_SECRET)
    for _fp, secret, added_at in rows:
        await store.add([(fingerprint(secret), secret)], float(added_at))
    return len(rows)


# -- Redis → SQLite ----------------------------------------------------------------------------------------------

async def _hash(backend: RedisBackend, name: str) -> dict[str, str]:
    raw = await backend.client.hgetall(name)
    return {_s(f): _s(v) for f, v in raw.items()}


async def _names(backend: RedisBackend, pattern: str) -> list[str]:
    return sorted([_s(n) async for n in backend.client.scan_iter(match=backend.key(pattern), count=1000)])


async def _stream(backend: RedisBackend, name: str) -> list[list[Any]]:
    """Every entry's row, oldest first, read in pages."""
    out: list[list[Any]] = []
    low = "-"
    while True:
        page = await backend.client.xrange(backend.key(name), min=low, max="+", count=CHUNK)
        if not page:
            return out
        for _id, fields in page:
            try:
                row = ujson.loads((fields or {})[b"row"])
            except (KeyError, ValueError, TypeError):
                continue
            if isinstance(row, list):
                out.append(row)
        low = "(" + _s(page[-1][0])


async def from_redis(backend: RedisBackend, db: Database, settings: Settings, replace: bool = False) -> dict[str, int]:
    """`replace`: empty the tables first, in the same transaction as the copy (a copy that fails leaves the
    database as it was)."""
    k = backend.key
    batches: list[tuple[str, list[tuple[Any, ...]]]] = \
        [(f"DELETE FROM {t}", [()]) for t in SQLITE_TABLES] if replace else []
    counts: dict[str, int] = {}

    def put(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        batches.append((f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                        rows))
        counts[table] = len(rows)

    usage: dict[tuple[str, str, str], dict[str, int]] = {}
    failures: list[tuple[Any, ...]] = []
    prefix = len(k("usage:"))
    for name in await _names(backend, "usage:*"):
        day = name[prefix:]
        for field, value in (await _hash(backend, name)).items():
            fp, model, metric = field.split("\t", 2)
            if metric.startswith("f:"):
                failures.append((day, fp, model, metric[2:], int(value)))
            elif metric in USAGE_METRICS:
                usage.setdefault((day, fp, model), {})[metric] = int(value)
    put("key_usage", ("day", "key_fp", "model", *USAGE_METRICS),
        [(*key, *(m.get(x, 0) for x in USAGE_METRICS)) for key, m in usage.items()])
    put("key_failures", ("day", "key_fp", "model", "kind", "count"), failures)
    clients = []
    prefix = len(k("clients:"))
    for name in await _names(backend, "clients:*"):
        clients += [(name[prefix:], ip, int(n)) for ip, n in (await _hash(backend, name)).items()]
    put("client_usage", ("day", "ip", "requests"), clients)
    ck: dict[tuple[str, str, str], dict[str, int]] = {}
    prefix = len(k("ckusage:"))
    for name in await _names(backend, "ckusage:*"):
        for field, value in (await _hash(backend, name)).items():
            key_id, model, metric = field.split("\t", 2)
            ck.setdefault((name[prefix:], key_id, model), {})[metric] = int(value)
    put("client_key_usage", ("day", "key_id", "model", "requests", "tokens"),
        [(*key, m.get("requests", 0), m.get("tokens", 0)) for key, m in ck.items()])
    put("request_daily", ("day", "outcome", "count"),
        [(*f.split("\t", 1), int(n)) for f, n in (await _hash(backend, k("daily"))).items()])
    put("key_state", ("key_fp", "disabled_reason", "disabled_at", "backoff_until", "backoff_failures", "last_error",
                      "last_error_at"),
        key_state_rows(await _hash(backend, k("keystate")), await _hash(backend, k("keydisabled"))))
    put("key_model_state", ("key_fp", "model", "cooldown_until", "exhausted_day", "reason"),
        [(*f.split("\t", 1), *ujson.loads(v)) for f, v in (await _hash(backend, k("modelstate"))).items()])
    put("key_learned_limit", ("key_fp", "model", "per_day", "per_minute", "tokens_per_minute", "learned_at"),
        [(*f.split("\t", 1), *ujson.loads(v)) for f, v in (await _hash(backend, k("learned"))).items()])
    put("key_project", ("key_fp", "project"), list((await _hash(backend, k("project"))).items()))
    requests = (await _stream(backend, "requests"))[-settings.REQUEST_LOG_MAX_ROWS:]
    put("request_log", ("ts", "model", "key_fp", "attempts", "status", "latency_ms", "prompt_tokens",
                        "completion_tokens", "client_ip", "stream", "error", "client"),
        [tuple((r + [None] * 12)[:12]) for r in requests])
    put("audit", ("ts", "client_ip", "via", "action", "target", "detail"),
        [tuple((r + [None] * 6)[:6]) for r in await _stream(backend, "audit")])
    meta = await _hash(backend, k("meta"))
    secrets = []
    for table, secret_name in SESSION_TABLES.items():
        index = k("session", table)
        hashes = [_s(h) for h in await backend.client.zrange(index, 0, -1)]
        values = await backend.client.mget([f"{index}:{h}" for h in hashes]) if hashes else []
        put(table, ("token_hash", "csrf", "created_at", "expires_at", "client_ip"),
            [(h, *ujson.loads(v)) for h, v in zip(hashes, values, strict=True) if v is not None])
        if secret_name in meta:
            secrets.append((secret_name, meta[secret_name]))
    batches.append(("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", secrets))
    put("setting_override", ("name", "value", "env_value", "env_source", "changed_at"),
        [(name, *ujson.loads(v)) for name, v in (await _hash(backend, k("settings"))).items()])
    put("removed_key", ("key_fp", "removed_at"),
        [(fp, float(at)) for fp, at in (await _hash(backend, k("removedkey"))).items()])
    notes = []
    for fp, v in (await _hash(backend, k("keynote"))).items():
        note, tags, at, updated = ujson.loads(v)
        notes.append((fp, note, ujson.dumps(tags, ensure_ascii=False), at, updated))
    put("key_note", ("key_fp", "note", "tags", "disabled_by_hand_at", "updated_at"), notes)
    put("conversation", ("id", "title", "model", "params", "messages", "search_text", "created_at", "updated_at",
                         "bytes"), await _conversations_from(backend))
    put("stored_response", ("id", "created_at", "response", "context", "bytes"), await _responses_from(backend))
    put("stored_key", ("key_fp", "secret", "added_at"), await _stored_keys_from(backend, settings))
    keys = []
    for raw in (await _hash(backend, k("clientkey"))).values():
        doc = ujson.loads(raw)
        doc["models"] = json.dumps(doc.get("models") or [])  # as SqliteClientKeyStore writes it
        doc["enabled"] = int(bool(doc.get("enabled")))
        keys.append(tuple(doc.get(c) for c in CLIENT_KEY_COLUMNS))
    put("client_key", CLIENT_KEY_COLUMNS, keys)
    await db.write(batches)
    return counts


async def _conversations_from(backend: RedisBackend) -> list[tuple[Any, ...]]:
    rows = []
    for cid in [_s(c) for c in await backend.client.zrange(backend.key("conv", "ids"), 0, -1)]:
        h = await backend.client.hgetall(backend.key("conv", "id", cid))
        if not h:
            continue
        model = h.get(b"model")
        rows.append((cid, _s(h[b"title"]), None if model is None else _s(model), _s(h[b"params"]),
                     _s(h[b"messages"]), _s(h.get(b"search", b"")), float(h[b"created_at"]),
                     float(h[b"updated_at"]), int(h[b"bytes"])))
    return rows


async def _responses_from(backend: RedisBackend) -> list[tuple[Any, ...]]:
    rows = []
    sizes = await _hash(backend, backend.key("resp", "sizes"))
    for rid in [_s(r) for r in await backend.client.zrange(backend.key("resp", "ids"), 0, -1)]:
        h = await backend.client.hgetall(backend.key("resp", "id", rid))
        if not h:
            continue  # expired
        rows.append((rid, float(h[b"created_at"]), _s(h[b"response"]), _s(h[b"context"]), int(sizes.get(rid, 0))))
    return rows


async def _stored_keys_from(backend: RedisBackend, settings: Settings) -> list[tuple[Any, ...]]:
    raw = await _hash(backend, backend.key("storedkey"))
    if not raw:
        return []
    from .redis_keys import RedisKeyStore
    secrets = await RedisKeyStore(backend, settings.KEY_ENCRYPTION_SECRET).stored()
    if len(secrets) != len(raw):
        raise MigrationRefused(
            f"{len(raw)} key(s) added on the dashboard are stored encrypted in Redis, and {len(secrets)} could be "
            "opened: set KEY_ENCRYPTION_SECRET to the secret they were stored with.")
    return [(fingerprint(s), s, float(ujson.loads(raw[fingerprint(s)])["at"])) for s in secrets]


# -- emptiness and --force ---------------------------------------------------------------------------------------

def _glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# Keyloom's own names under REDIS_PREFIX (server/store/redis_*.py): only these are "the target's data". Another
# cluster whose prefix starts with this one's (keyloom: and keyloom:eu:) is never counted, nor deleted by --force.
OWN_NAMES = frozenset({"daily", "requests", "audit", "keystate", "keydisabled", "modelstate", "learned", "project",
                       "statever", "clientkey", "meta", "settings", "keynote", "storedkey", "removedkey",
                       "conv:ids", "conv:bytes", "resp:ids", "resp:sizes", "resp:bytes"})
OWN_FAMILIES = ("usage:", "clients:", "ckusage:", "applied:", "minute:", "conv:id:", "resp:id:", "session:")


def own_name(rest: str) -> bool:
    """Whether a key (without the prefix) is one Keyloom writes."""
    return rest in OWN_NAMES or rest.startswith(OWN_FAMILIES)


async def redis_keys(backend: RedisBackend) -> list[bytes]:
    prefix = backend.prefix.encode()
    return [n async for n in backend.client.scan_iter(match=_glob(backend.prefix) + "*", count=1000)
            if own_name(n[len(prefix):].decode("utf-8", "replace"))]


async def sqlite_rows(db: Database, tables: Iterable[str] = SQLITE_TABLES) -> dict[str, int]:
    out = {}
    for table in tables:
        (n,), = await db.fetchall(f"SELECT COUNT(*) FROM {table}")
        if n:
            out[table] = n
    return out


async def run(to_redis_: bool, force: bool, settings: Settings, data_dir: Path,
              say: Callable[[str], None] = print) -> dict[str, int]:
    """The whole command: lock DATA_DIR, check (or empty) the target, copy. Raises MigrationRefused."""
    if not settings.REDIS_URL:
        raise MigrationRefused("REDIS_URL is not set: say which Redis to copy to or from.")
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except DataDirBusy as e:
        raise MigrationRefused(f"{e} (stop Keyloom before copying its data)") from None
    db = Database(data_dir / DB_FILE)
    backend = RedisBackend(settings.REDIS_URL, settings.REDIS_PREFIX, settings.REPLICA_NAME)
    try:
        if not to_redis_ and not (data_dir / DB_FILE).exists():
            say(f"creating {data_dir / DB_FILE}")
        await db.open()
        await backend.client.ping()
        where = f"Redis at {safe_url(settings.REDIS_URL)} (prefix {settings.REDIS_PREFIX!r})"
        if to_redis_:
            existing = await redis_keys(backend)
            if existing and not force:
                raise MigrationRefused(f"{where} already holds {len(existing)} key(s) under this prefix: copying "
                                       "would mix two pools. Use another REDIS_PREFIX, or --force to replace them.")
            stored = await sqlite_rows(db, ("stored_key",))
            if stored and not settings.KEY_ENCRYPTION_SECRET:
                raise MigrationRefused(f"{stored['stored_key']} key(s) were added on the dashboard; Redis keeps them "
                                       "encrypted with KEY_ENCRYPTION_SECRET, which is not set. Set it (and keep it: "
                                       "every replica needs the same one).")
            for i in range(0, len(existing), CHUNK):
                await backend.client.unlink(*existing[i:i + CHUNK])
            skipped = await sqlite_rows(db, NOT_COPIED)
            counts = await to_redis(db, backend, settings)
            say(f"copied {data_dir / DB_FILE} into {where}")
        else:
            existing_rows = await sqlite_rows(db)
            if existing_rows and not force:
                held = ", ".join(f"{t}: {n}" for t, n in existing_rows.items())
                raise MigrationRefused(
                    f"{data_dir / DB_FILE} already holds data ({held}): copying would mix two pools. Point DATA_DIR "
                    "at an empty directory, or --force to replace it.")
            skipped = {}
            counts = await from_redis(backend, db, settings, replace=bool(existing_rows))
            say(f"copied {where} into {data_dir / DB_FILE}")
        for table, n in counts.items():
            say(f"  {table}: {n}")
        for table, n in skipped.items():
            say(f"  not copied: {table} ({n} rows; no Redis layout for it yet)")
        return counts
    finally:
        await backend.client.aclose()
        await db.close()
        lock.release()


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.store.migrate", description=(
        "Copy Keyloom's data between the SQLite database in DATA_DIR and the Redis at REDIS_URL (REDIS_PREFIX). "
        "Stop Keyloom first."))
    way = parser.add_mutually_exclusive_group(required=True)
    way.add_argument("--to-redis", action="store_true", help="DATA_DIR's SQLite database → Redis")
    way.add_argument("--from-redis", action="store_true", help="Redis → DATA_DIR's SQLite database")
    parser.add_argument("--force", action="store_true", help="replace what the target already holds")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(dict(os.environ if env is None else env))
    except SettingsError as e:
        sys.stderr.write("invalid settings:\n" + "".join(f"  {p}\n" for p in e.problems))
        return 2
    problem = url_problem(settings.REDIS_URL) if settings.REDIS_URL else None
    if problem:
        sys.stderr.write(f"invalid settings:\n  REDIS_URL=(hidden): {problem}\n")
        return 2
    try:
        asyncio.run(run(args.to_redis, args.force, settings, resolve_data_dir(settings.DATA_DIR)))
    except MigrationRefused as e:
        sys.stderr.write(f"nothing copied: {e}\n")
        return 1
    except (TimeoutError, RedisError, OSError, ValueError) as e:  # Redis unreachable, refusing, or odd data
        redact = Redactor()
        redact.add([*url_secrets(settings.REDIS_URL), settings.KEY_ENCRYPTION_SECRET])
        text = redact(str(e).splitlines()[0]) if str(e) else ""
        sys.stderr.write(f"the copy failed ({type(e).__name__}: {text}); run it again with --force once the cause "
                         "is fixed\n")
        return 1
    return 0



def key_state_rows(health: dict[str, str], disabled: dict[str, str]) -> list[tuple[Any, ...]]:
    """key_state rows from Redis' two hashes (a key's health, and whether it is disabled)."""
    rows = []
    for fp in sorted({*health, *disabled}):
        h = ujson.loads(health[fp]) if fp in health else [None, 0, None, None]
        d = ujson.loads(disabled[fp]) if fp in disabled else [None, None]
        rows.append((fp, *d[:2], *h[:4]))
    return rows


class StreamIds:
    """Increasing stream entry ids ("ms-seq") from epoch times that may repeat or step back."""

    def __init__(self) -> None:
        self.ms = 0
        self.seq = 0  # so that a first time of 0 still gets an id above 0-0

    def at(self, ts: Any) -> str:
        ms = max(self.ms, int(float(ts or 0) * 1000))
        self.seq = self.seq + 1 if ms == self.ms else 0
        self.ms = ms
        return f"{ms}-{self.seq}"


if __name__ == "__main__":
    sys.exit(main())
