"""Where the dashboard keeps what it is told about keys: keys added on the dashboard, keys from the environment
that were removed (so they stay out after a restart), and each key's note and tags.

Why an interface: in SQLite mode these are tables in DATA_DIR (`SqliteKeyStore`, the statements the admin
service and the key notes ran before); with REDIS_URL every replica must see the same keys
(`server.store.redis_keys.RedisKeyStore`, which also encrypts the keys it stores). The admin service, the key
notes and the pool never know which one is in use.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import ujson

from ..errors import ApiError
from ..store.db import Database

NoteRow = tuple[str, list[str], float | None, float]  # note, tags, disabled_by_hand_at, updated_at


class KeyStore:
    def refuse_adding(self) -> ApiError | None:
        """Why keys cannot be added on the dashboard here (a 4xx naming what to set), or None."""
        return None

    def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """`on_change()` runs when another process added or removed keys (nothing to watch for one process)."""

    async def stored(self) -> list[str]:
        """The keys added on the dashboard, oldest first."""
        raise NotImplementedError

    async def removed(self) -> set[str]:
        """Fingerprints of keys removed on the dashboard (environment keys stay out after a restart)."""
        raise NotImplementedError

    async def add(self, keys: list[tuple[str, str]], now: float) -> None:
        """Keep these (fingerprint, key) pairs; a key removed before is no longer removed."""
        raise NotImplementedError

    async def remove(self, fps: list[str], keep_out: list[str], now: float) -> None:
        """Forget these keys and their notes (a key added again starts without them); remember `keep_out`
        (keys from the environment) as removed."""
        raise NotImplementedError

    async def notes(self, fps: list[str] | None = None) -> dict[str, NoteRow]:
        """The note rows of these keys (all when None)."""
        raise NotImplementedError

    async def save_note(self, fp: str, note: str, tags: list[str], disabled_by_hand_at: float | None,
                        now: float) -> None:
        raise NotImplementedError


class SqliteKeyStore(KeyStore):
    """Tables stored_key, removed_key (migration 0003) and key_note (0009) in DATA_DIR's database."""

    def __init__(self, db: Database):
        self.db = db

    async def stored(self) -> list[str]:
        return [s for s, in await self.db.fetchall("SELECT secret FROM stored_key ORDER BY added_at")]

    async def removed(self) -> set[str]:
        return {fp for fp, in await self.db.fetchall("SELECT key_fp FROM removed_key")}

    async def add(self, keys: list[tuple[str, str]], now: float) -> None:
        await self.db.write([
            ("INSERT OR REPLACE INTO stored_key (key_fp, secret, added_at) VALUES (?, ?, ?)",
             [(fp, secret, now) for fp, secret in keys]),
            ("DELETE FROM removed_key WHERE key_fp = ?", [(fp,) for fp, _ in keys])])

    async def remove(self, fps: list[str], keep_out: list[str], now: float) -> None:
        await self.db.write([
            ("DELETE FROM stored_key WHERE key_fp = ?", [(fp,) for fp in fps]),
            ("DELETE FROM key_note WHERE key_fp = ?", [(fp,) for fp in fps]),
            ("INSERT OR REPLACE INTO removed_key (key_fp, removed_at) VALUES (?, ?)", [(fp, now) for fp in keep_out])])

    async def notes(self, fps: list[str] | None = None) -> dict[str, NoteRow]:
        sql = "SELECT key_fp, note, tags, disabled_by_hand_at, updated_at FROM key_note"
        params: tuple[Any, ...] = ()
        if fps is not None:
            sql += f" WHERE key_fp IN ({', '.join('?' * len(fps))})"
            params = tuple(fps)
        return {fp: (note, ujson.loads(tags), at, updated)
                for fp, note, tags, at, updated in await self.db.fetchall(sql, params)}

    async def save_note(self, fp: str, note: str, tags: list[str], disabled_by_hand_at: float | None,
                        now: float) -> None:
        await self.db.write([(
            "INSERT OR REPLACE INTO key_note (key_fp, note, tags, disabled_by_hand_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)", [(fp, note, ujson.dumps(tags, ensure_ascii=False), disabled_by_hand_at, now)])])
