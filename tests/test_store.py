"""SQLite: migrations (upgrade in place, refuse newer), WAL, the batched flush and reading back."""
from __future__ import annotations

import asyncio
import sqlite3
import stat

import pytest

from server.clock import ManualClock
from server.limits import ClientLimits
from server.pool.keys import KeyPool
from server.pool.quota import DailyLimits, MemoryUsage, QuotaDay
from server.settings import Settings
from server.store.counters import SqliteCounters
from server.store.db import Database, SchemaTooNew, load_migrations
from server.store.flush import Flusher
from server.store.requestlog import RequestLog, RequestRow
from tests.conftest import KEYS
from tests.support.proc import KeyloomProcess


async def opened(tmp_path, **env):
    """A fresh database and the owners a flusher serves, on a manual clock."""
    clock = ManualClock()
    db = Database(tmp_path / "k.sqlite3")
    await db.open()
    return (clock, db, *build(clock, db, **env))


def build(clock, db, **env):
    settings = Settings.from_env({"API_KEY_DAILY_LIMIT": "0", **env})
    qd = QuotaDay(clock, settings.QUOTA_RESET_TZ)
    pool = KeyPool(KEYS, clock, qd, DailyLimits(lambda: settings), MemoryUsage(qd.today()))
    limits = ClientLimits(lambda: settings, qd, clock)
    log = RequestLog()
    return pool, limits, log, Flusher(SqliteCounters(db), pool, limits, log, lambda: settings, clock)


@pytest.mark.gen_test
async def test_migrations_apply_in_order_and_record_versions(tmp_path):
    db = Database(tmp_path / "k.sqlite3")
    await db.open()
    assert db.version == len(load_migrations()) >= 2
    rows = await db.fetchall("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, db.version + 1))
    assert (await db.fetchall("PRAGMA journal_mode"))[0][0] == "wal"
    await db.close()
    assert stat.S_IMODE((tmp_path / "k.sqlite3").stat().st_mode) == 0o600
    db2 = Database(tmp_path / "k.sqlite3")
    await db2.open()  # opening again applies nothing
    assert len(await db2.fetchall("SELECT * FROM schema_migrations")) == db.version
    await db2.close()


@pytest.mark.gen_test
async def test_a_database_from_the_first_migration_upgrades_in_place(tmp_path):
    path = tmp_path / "old.sqlite3"
    first = load_migrations()[:1]
    old = Database(path)
    await old.open(first)
    assert old.version == 1
    await old.write([("INSERT INTO key_usage (day, key_fp, model, requests) VALUES (?, ?, ?, ?)",
                      [("2026-01-01", "abc123", "gemini-2.5-pro", 42)])])
    await old.close()
    new = Database(path)
    await new.open()
    assert new.version == len(load_migrations())
    assert await new.fetchall("SELECT requests FROM key_usage") == [(42,)]
    assert await new.fetchall("SELECT COUNT(*) FROM request_log") == [(0,)]  # the later tables now exist
    await new.close()


@pytest.mark.gen_test
async def test_a_database_from_a_newer_keyloom_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    db = Database(path)
    await db.open()
    await db.write([("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                     [(99, "from_the_future", 0.0)])])
    await db.close()
    with pytest.raises(SchemaTooNew, match="newer Keyloom"):
        await Database(path).open()


def test_newer_database_stops_startup_with_a_clear_message(tmp_path):
    con = sqlite3.connect(tmp_path / "keyloom.sqlite3")
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at REAL NOT NULL)")
    con.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    con.commit()
    con.close()
    p = KeyloomProcess(env={"PASSWORD": "pw-123456"}, data_dir=tmp_path)
    assert p.proc.wait(15) == 2
    p._reader.join(5)
    assert "newer Keyloom" in p.output() and "999" in p.output()


@pytest.mark.gen_test
async def test_flush_writes_one_batch_and_load_reads_it_back(tmp_path):
    clock, db, pool, limits, log, flusher = await opened(tmp_path)
    a, b, _ = pool.keys
    assert pool.pick("gemini-2.5-pro") is a
    pool.success(a, "gemini-2.5-pro", 10, 20)
    assert pool.pick("gemini-2.5-pro") is b
    pool.failure(b, "gemini-2.5-pro", "QuotaExceeded", "over quota")
    pool.cool_down(b, "gemini-2.5-pro", 30, "over quota")
    pool.disable(pool.keys[2], "InvalidKey: API key not valid")
    assert limits.admit("203.0.113.9") is None
    log.add(RequestRow(clock.time(), "gemini-2.5-pro", a.fp, 2, 200, 12.5, 10, 20, "203.0.113.9", False, None))
    written = await flusher.flush()
    assert written >= 6 and await flusher.flush() == 0  # nothing changed since

    usage = await db.fetchall("SELECT key_fp, requests, successes, failures, prompt_tokens, completion_tokens "
                              "FROM key_usage ORDER BY key_fp")
    assert sorted(usage) == sorted([(a.fp, 1, 1, 0, 10, 20), (b.fp, 1, 0, 1, 0, 0)])
    assert await db.fetchall("SELECT kind, count FROM key_failures") == [("QuotaExceeded", 1)]
    assert await db.fetchall("SELECT status, attempts, client_ip FROM request_log") == [(200, 2, "203.0.113.9")]

    # a second process reading the same file sees the same state
    pool2, limits2, _, flusher2 = build(clock, db)
    await flusher2.load()
    a2, b2, c2 = pool2.keys
    assert pool2.usage.requests(a2.fp, "gemini-2.5-pro") == 1
    assert pool2.usage.get(b2.fp, "gemini-2.5-pro").failure_kinds == {"QuotaExceeded": 1}
    assert not c2.usable and pool2.pick("gemini-2.5-pro") is a2  # b2 cooling, c2 disabled
    assert limits2.per_ip == {"203.0.113.9": 1}
    await db.close()


@pytest.mark.gen_test
async def test_a_failed_flush_keeps_its_rows_for_the_next_one(tmp_path):
    clock, db, pool, limits, log, flusher = await opened(tmp_path)
    key = pool.pick("m")
    pool.disable(key, "InvalidKey")
    log.add(RequestRow(clock.time(), "m", key.fp, 1, 503, 1.0, 0, 0, "ip", False, "x"))
    await db.conn.execute("ALTER TABLE request_log RENAME TO request_log_gone")
    with pytest.raises(sqlite3.OperationalError):
        await flusher.flush()
    assert await db.fetchall("SELECT COUNT(*) FROM key_usage") == [(0,)]  # all or nothing
    await db.conn.execute("ALTER TABLE request_log_gone RENAME TO request_log")
    assert await flusher.flush() >= 3
    assert await db.fetchall("SELECT COUNT(*) FROM request_log") == [(1,)]
    assert await db.fetchall("SELECT disabled_reason FROM key_state") == [("InvalidKey",)]
    await db.close()


@pytest.mark.gen_test
async def test_prune_drops_old_request_log_rows(tmp_path):
    clock, db, _, _, log, flusher = await opened(tmp_path, REQUEST_LOG_DAYS="7")
    for age_days in (10, 8, 6, 0):
        log.add(RequestRow(clock.time() - age_days * 86400, "m", None, 1, 200, 1.0, 0, 0, "ip", False, None))
    await flusher.flush()
    await flusher.prune()
    assert len(await db.fetchall("SELECT id FROM request_log")) == 2
    await db.close()


@pytest.mark.gen_test
async def test_keys_are_never_written_in_plaintext(tmp_path):
    clock, db, pool, _, _, flusher = await opened(tmp_path)
    for key in pool.keys:
        pool.pick("m")
        pool.failure(key, "m", "InvalidKey", f"API key not valid: {key.masked}")
        pool.disable(key, "InvalidKey")
    await flusher.flush()
    await db.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for k in KEYS:
        assert k.encode() not in raw


@pytest.mark.gen_test
async def test_overlapping_flushes_take_turns_and_both_leave_everything_on_disk(tmp_path):
    clock, db, pool, _, log, flusher = await opened(tmp_path)
    log.add(RequestRow(clock.time(), "m", None, 1, 200, 1.0, 0, 0, "ip", False, None))
    first = asyncio.ensure_future(flusher.flush())
    await asyncio.sleep(0)  # the first has drained the row and is writing it
    log.add(RequestRow(clock.time(), "m", None, 1, 200, 1.0, 0, 0, "ip", False, None))
    await flusher.flush()  # waits for the first, then writes the second row
    assert await db.fetchall("SELECT COUNT(*) FROM request_log") == [(2,)]
    await first
    await db.close()
