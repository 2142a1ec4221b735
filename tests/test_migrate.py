"""python -m server.store.migrate: SQLite → Redis → SQLite gives equal tables, and a target that holds data is
refused unless --force (a real redis-server)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ujson

from server.redact import fingerprint
from server.settings import Settings
from server.store.db import DB_FILE, Database
from server.store.history import RedisHistory
from server.store.migrate import SQLITE_TABLES, main, run
from server.store.redis_backend import RedisBackend
from tests.conftest import KEYS
from tests.support.proc import ROOT
from tests.support.redis_server import RedisServer

PREFIX = "kl-migrate:"
SECRET = "a passphrase only the operator knows"



def env(server: RedisServer, data_dir: Path, **more: str) -> dict[str, str]:
    return {"DATA_DIR": str(data_dir), "REDIS_URL": server.url, "REDIS_PREFIX": PREFIX,
            "KEY_ENCRYPTION_SECRET": SECRET, "REPLICA_NAME": "old-box", **more}


def settings(server: RedisServer, data_dir: Path, **more: str) -> Settings:
    return Settings.from_env(env(server, data_dir, **more))


NOW = time.time()  # sessions and stored responses must still be alive when the copy runs
FP = fingerprint(KEYS[0])


async def fill(data_dir: Path) -> None:
    """A row (or a few) in every table the command copies, as Keyloom writes them."""
    db = Database(data_dir / DB_FILE)
    await db.open()
    try:
        await db.write([
            ("INSERT INTO key_usage VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
             [("2024-05-01", FP, "gemini-2.5-flash", 10, 8, 2, 1234, 567),
              ("2024-05-02", FP, "gemini-x", 0, 0, 0, 0, 0)]),
            ("INSERT INTO key_failures VALUES (?, ?, ?, ?, ?)",
             [("2024-05-01", FP, "gemini-2.5-flash", "Overloaded", 2)]),
            ("INSERT INTO client_usage VALUES (?, ?, ?)", [("2024-05-01", "10.0.0.1", 7), ("2024-05-01", "::1", 3)]),
            ("INSERT INTO client_key_usage VALUES (?, ?, ?, ?, ?)", [("2024-05-01", "ck_1", "gemini-x", 4, 400)]),
            ("INSERT INTO request_daily VALUES (?, ?, ?)", [("2024-05-01", "ok", 8), ("2024-05-01", "error", 2)]),
            ("INSERT INTO key_state VALUES (?, ?, ?, ?, ?, ?, ?)",
             [(FP, "Disabled by hand: 测试", 1714550400.25, None, 0, "InvalidKey: bad", 1714550400.5),
              ("bbbbbbbbbbbb", None, None, 1714550999.0, 3, None, None)]),
            ("INSERT INTO key_model_state VALUES (?, ?, ?, ?, ?)",
             [(FP, "gemini-x", 1714550460.0, "2024-05-01", "QuotaExceeded")]),
            ("INSERT INTO key_learned_limit VALUES (?, ?, ?, ?, ?, ?)",
             [(FP, "gemini-x", 250, 10, None, 1714550400.0)]),
            ("INSERT INTO key_project VALUES (?, ?)", [(FP, "123456789012")]),
            ("INSERT INTO request_log (ts, model, key_fp, attempts, status, latency_ms, prompt_tokens, "
             "completion_tokens, client_ip, stream, error, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
             [(1714550400.0 + i, "gemini-x", FP if i % 2 else None, 1, 200 if i % 3 else 503, 12.34 + i, i, 2 * i,
               "10.0.0.1", i % 2, None if i % 3 else "overloaded", "friend" if i == 4 else None) for i in range(12)]),
            ("INSERT INTO audit (ts, client_ip, via, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
             [(1714550400.0 + i, "10.0.0.2", "session", f"act{i}", None if i else "AIza…0001", "ünïcode")
              for i in range(5)]),
            ("INSERT INTO admin_session VALUES (?, ?, ?, ?, ?)",
             [("h" * 64, "csrf1", NOW - 10, NOW + 3600, "10.0.0.3")]),
            ("INSERT INTO chat_session VALUES (?, ?, ?, ?, ?)", [("c" * 64, "csrf2", NOW - 10, NOW + 7200, None)]),
            ("INSERT INTO meta VALUES (?, ?)", [("session_secret", "ab" * 32), ("chat_session_secret", "cd" * 32)]),
            ("INSERT INTO setting_override VALUES (?, ?, ?, ?, ?)",
             [("FLUSH_INTERVAL", "2", "1", "default", 1714550400.0)]),
            ("INSERT INTO stored_key VALUES (?, ?, ?)", [(FP, KEYS[0], 1714550400.0),
                                                         (fingerprint(KEYS[1]), KEYS[1], 1714550500.0)]),
            ("INSERT INTO removed_key VALUES (?, ?)", [("dddddddddddd", 1714550401.5)]),
            ("INSERT INTO key_note VALUES (?, ?, ?, ?, ?)",
             [(FP, "team A's\nbackup", ujson.dumps(["paid", "团队"], ensure_ascii=False), None, 1714550402.0)]),
            ("INSERT INTO conversation (id, title, model, params, messages, search_text, created_at, updated_at, "
             "bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
             [("conv1", "Hello 世界", "gemini-x", "{}", '[{"role":"user","content":"hi"}]', "hello 世界 hi",
               NOW - 100, NOW - 50, 60),
              ("conv2", "No model", None, '{"t":1}', "[]", "no model", NOW - 90, NOW - 80, 20)]),
            ("INSERT INTO stored_response VALUES (?, ?, ?, ?, ?)",
             [("resp_1", NOW - 60, '{"id":"resp_1"}', '[{"type":"message"}]', 35)]),
            ("INSERT INTO client_key VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
             [("ck_1", "friend", "f" * 64, "kl-abc", 100, None, 5, json.dumps(["gemini-x"]), "2030-01-01", 1,
               1714550400.0),
              ("ck_2", "off", "e" * 64, "kl-def", None, 1000, None, json.dumps([]), None, 0, 1714550401.0)]),
        ])
    finally:
        await db.close()


async def dump(data_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied table, in a stable order (the log's and the trail's own ids left out: a copy numbers anew)."""
    db = Database(data_dir / DB_FILE)
    await db.open()
    try:
        out = {}
        for table in SQLITE_TABLES:
            cols = [r[1] for r in await db.fetchall(f"PRAGMA table_info({table})") if r[1] != "id"]
            order = "id" if table in ("request_log", "audit") else ", ".join(cols)
            out[table] = await db.fetchall(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")
        out["meta"] = await db.fetchall("SELECT name, value FROM meta WHERE name LIKE '%session_secret' ORDER BY 1")
        return out
    finally:
        await db.close()


def test_sqlite_to_redis_and_back_gives_equal_tables(redis_server, tmp_path):
    redis_server.flush()
    source, back = tmp_path / "source", tmp_path / "back"
    asyncio.run(fill(source))
    counts = asyncio.run(run(True, False, settings(redis_server, source), source, say=lambda _: None))
    assert counts["request_log"] == 12 and counts["stored_key"] == 2 and counts["admin_session"] == 1

    r = redis_server.sync_client()
    try:
        # what Redis holds is in the shared layout: the dashboard's Redis reader sees the copied history
        assert r.hget(PREFIX + "daily", "2024-05-01\tok") == "8"
        assert r.hget(PREFIX + "usage:2024-05-01", f"{FP}\tgemini-2.5-flash\tf:Overloaded") == "2"
        assert r.ttl(PREFIX + "usage:2024-05-01") > 0
        assert ujson.loads(r.xrevrange(PREFIX + "requests", count=1)[0][1]["row"])[-1] == "old-box"
        # no key in readable form anywhere in Redis
        for name in r.scan_iter(match=PREFIX + "*"):
            kind = r.type(name)
            text = str(r.hgetall(name) if kind == "hash" else r.xrange(name) if kind == "stream" else
                       r.zrange(name, 0, -1) if kind == "zset" else r.get(name))
            assert not any(k in text for k in KEYS), name
    finally:
        r.close()

    async def redis_reads() -> tuple[Any, Any]:
        backend = RedisBackend(redis_server.url, PREFIX)
        try:
            h = RedisHistory(backend)
            return await h.recent_requests("5xx", 2), await h.key_days(FP, ["2024-05-01"])
        finally:
            await backend.client.aclose()
    five, days = asyncio.run(redis_reads())
    assert [e.status for e in five] == [503, 503] and five[0].ts == 1714550409.0
    assert days == {"2024-05-01": (10, 8, 2, 1801)}

    asyncio.run(run(False, False, settings(redis_server, back), back, say=lambda _: None))
    before, after = asyncio.run(dump(source)), asyncio.run(dump(back))
    for table in before:
        assert after[table] == before[table], table
    assert all(before[t] for t in before), [t for t in before if not before[t]]  # every table was exercised


def test_a_target_with_data_is_refused_unless_forced(redis_server, tmp_path, capsys):
    redis_server.flush()
    source = tmp_path / "source"
    asyncio.run(fill(source))
    assert main(["--to-redis"], env(redis_server, source)) == 0
    assert "request_log: 12" in capsys.readouterr().out
    assert main(["--to-redis"], env(redis_server, source)) == 1
    assert "already holds" in capsys.readouterr().err
    assert main(["--to-redis", "--force"], env(redis_server, source)) == 0  # replaced, not added to
    r = redis_server.sync_client()
    try:
        assert r.hget(PREFIX + "daily", "2024-05-01\tok") == "8"
        assert r.xlen(PREFIX + "requests") == 12
    finally:
        r.close()
    # back into a DATA_DIR that holds data: refused, then replaced with --force
    assert main(["--from-redis"], env(redis_server, source)) == 1
    assert "already holds data" in capsys.readouterr().err
    assert main(["--from-redis", "--force"], env(redis_server, source)) == 0
    assert asyncio.run(dump(source))["request_daily"] == [("2024-05-01", "error", 2), ("2024-05-01", "ok", 8)]


def test_keys_added_on_the_dashboard_need_the_encryption_secret(redis_server, tmp_path, capsys):
    redis_server.flush()
    source = tmp_path / "source"
    asyncio.run(fill(source))
    assert main(["--to-redis"], env(redis_server, source, KEY_ENCRYPTION_SECRET="")) == 1
    assert "KEY_ENCRYPTION_SECRET" in capsys.readouterr().err
    r = redis_server.sync_client()
    try:
        assert not list(r.scan_iter(match=PREFIX + "*"))  # refused before anything was written
    finally:
        r.close()


def test_the_request_log_copy_keeps_the_newest_rows(redis_server, tmp_path):
    redis_server.flush()
    source = tmp_path / "source"
    asyncio.run(fill(source))
    s = settings(redis_server, source)
    object.__setattr__(s, "REQUEST_LOG_MAX_ROWS", 5)  # below the setting's minimum: only to keep the test small
    asyncio.run(run(True, False, s, source, say=lambda _: None))
    r = redis_server.sync_client()
    try:
        entries = r.xrange(PREFIX + "requests")
        rows = [ujson.loads(f["row"]) for _, f in entries]
    finally:
        r.close()
    assert [row[0] for row in rows] == [1714550400.0 + i for i in range(7, 12)]
    # each entry's id is its row's time, so pruning by age (XTRIM MINID) treats copied rows like live ones
    assert [int(entry_id.split("-")[0]) for entry_id, _ in entries] == [int(row[0] * 1000) for row in rows]


# -- what a review found -------------------------------------------------------------------------------------

def test_the_command_as_the_readme_gives_it_copies_both_ways(redis_server, tmp_path):
    """`python -m server.store.migrate`, a real subprocess (not main() imported): there and back."""
    redis_server.flush()
    source, back = tmp_path / "source", tmp_path / "back"
    asyncio.run(fill(source))
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    for way, data_dir in (("--to-redis", source), ("--from-redis", back)):
        done = subprocess.run([sys.executable, "-m", "server.store.migrate", way], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={**base, **env(redis_server, data_dir)})
        assert done.returncode == 0, done.stderr
        assert "request_log: 12" in done.stdout
    assert asyncio.run(dump(back))["request_daily"] == asyncio.run(dump(source))["request_daily"]


def test_a_forced_copy_that_fails_leaves_the_database_as_it_was(redis_server, tmp_path, capsys):
    redis_server.flush()
    source = tmp_path / "source"
    asyncio.run(fill(source))
    assert main(["--to-redis"], env(redis_server, source)) == 0
    before = asyncio.run(dump(source))
    # back without the secret: the dashboard keys in Redis cannot be opened, so the copy is refused...
    assert main(["--from-redis", "--force"], env(redis_server, source, KEY_ENCRYPTION_SECRET="")) == 1
    assert "nothing copied" in capsys.readouterr().err
    assert asyncio.run(dump(source)) == before  # ...and --force emptied nothing


def test_another_cluster_under_a_longer_prefix_is_neither_counted_nor_deleted(redis_server, tmp_path):
    redis_server.flush()
    other = redis_server.sync_client()
    try:
        other.hset(PREFIX + "eu:usage:2024-05-01", "fp\tm\trequests", 7)  # the cluster of REDIS_PREFIX=kl-migrate:eu:
        source = tmp_path / "source"
        asyncio.run(fill(source))
        assert main(["--to-redis"], env(redis_server, source)) == 0  # not refused: nothing of this cluster there
        assert main(["--to-redis", "--force"], env(redis_server, source)) == 0
        assert other.hget(PREFIX + "eu:usage:2024-05-01", "fp\tm\trequests") == "7"
    finally:
        other.close()


def test_a_redis_url_the_command_cannot_read_is_refused_without_showing_it(redis_server, tmp_path, capsys):
    url = "redis://:hunter2/xyz@127.0.0.1:1/0"
    assert main(["--to-redis"], {**env(redis_server, tmp_path), "REDIS_URL": url}) == 2
    err = capsys.readouterr().err
    assert "REDIS_URL=(hidden)" in err and "hunter2" not in err
