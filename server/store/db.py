"""SQLite through aiosqlite: opening (WAL), migrations, and the few statements Keyloom runs.

Nothing here runs on the request path: the flusher writes in batches, start-up reads
back today's state. WAL with synchronous=NORMAL keeps the file consistent after a
crash or `kill -9` (a committed transaction is never half there) at a small cost per
commit; only what was not yet flushed is lost.
"""
from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from ..settings import ROOT

MIGRATIONS_DIR = ROOT / "migrations"
DB_FILE = "keyloom.sqlite3"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaTooNew(RuntimeError):
    """The database was written by a newer Keyloom than this one."""


class DatabaseUnusable(RuntimeError):
    """The database file cannot be used (not SQLite, damaged, locked, read-only); the message says what to do.
    Keyloom never replaces or deletes such a file: it may hold the only record of a day's usage."""


def explain(e: BaseException, path: Path) -> str:
    """One line for a start-up failure of the database at `path`."""
    text = str(e).lower()
    if isinstance(e, PermissionError) or "readonly" in text or "read-only" in text or \
            getattr(e, "errno", None) in (13, 30):  # EACCES, EROFS
        return (f"cannot write the database {path}: {getattr(e, 'strerror', None) or e}. Make DATA_DIR "
                f"({path.parent}) writable, or point DATA_DIR at a writable directory.")
    if "locked" in text or "busy" in text:
        return (f"the database {path} is locked by another program. Close it (or stop the other Keyloom) "
                "and start again.")
    if isinstance(e, sqlite3.DatabaseError):
        return (f"{path} is not a usable Keyloom database ({e}). Keyloom leaves it as it is: move it aside "
                "(or restore a backup) and start again, or point DATA_DIR elsewhere.")
    if "unable to open" in text:
        return f"cannot open the database {path}: {e}. Check that DATA_DIR ({path.parent}) exists and is writable."
    return f"cannot open the database {path}: {getattr(e, 'strerror', None) or e}"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file {path.name} does not look like NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3… without gaps; found {versions}")
    return found


async def schema_version(conn: aiosqlite.Connection) -> int:
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                       "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
    async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration], path: Path | str = "") -> int:
    """Apply what is missing, each migration in its own transaction; returns the version reached."""
    current = await schema_version(conn)
    await conn.commit()
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise SchemaTooNew(f"the database {path} has schema version {current}, but this Keyloom knows only up "
                           f"to {latest}: it was written by a newer Keyloom. Run that version, or point DATA_DIR "
                           f"elsewhere.")
    for m in migrations:
        if m.version <= current:
            continue
        # executescript commits any open transaction first; BEGIN…COMMIT makes the file's DDL and its
        # version row land together or not at all.
        await conn.executescript(
            f"BEGIN;\n{m.sql}\nINSERT INTO schema_migrations (version, name, applied_at) "
            f"VALUES ({m.version}, '{m.name}', {time.time()!r});\nCOMMIT;")
        current = m.version
    return current


class Database:
    def __init__(self, path: Path):
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        self.version = 0
        self._write_lock = asyncio.Lock()  # one transaction at a time on the one connection

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self, migrations: Sequence[Migration] | None = None) -> None:
        """Open (creating it private), check it is SQLite, migrate. Raises DatabaseUnusable with one clear line
        (and closes what it opened: aiosqlite's worker thread would otherwise keep the process alive)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # private from the first byte
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)  # transactions are explicit
            await self._conn.execute("PRAGMA busy_timeout=5000")  # first: a locked file waits, then says so
            await self._conn.execute("PRAGMA journal_mode=WAL")
            await self._conn.execute("PRAGMA synchronous=NORMAL")
            self.version = await migrate(self._conn, load_migrations() if migrations is None else migrations,
                                         self.path)
        except SchemaTooNew:
            await self.close()
            raise
        except (sqlite3.Error, OSError) as e:
            await self.close()
            raise DatabaseUnusable(explain(e, self.path)) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.conn.execute(sql, params) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def write(self, batches: Iterable[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """Run every (statement, rows) batch in one transaction."""
        async with self._write_lock:
            conn = self.conn
            try:
                await conn.execute("BEGIN")
                for sql, rows in batches:
                    if rows:
                        await conn.executemany(sql, rows)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
