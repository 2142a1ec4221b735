"""Keys added and removed on the dashboard, and key notes, shared by every replica through Redis (REDIS_URL set).

Why: a key added on one replica's dashboard must be served by all of them, and a key removed must leave every
pool. The replica that changes the keys writes Redis, then publishes a notice (which names no key); the others
read the keys again and bring their pool in line (`AdminService.sync_keys`); they read again when Redis comes
back after being away, since a notice may have been lost.

Keys added on the dashboard are stored ENCRYPTED with KEY_ENCRYPTION_SECRET (server/store/keycrypt.py): no key
is ever written to Redis in any readable form. Without the secret, adding keys on the dashboard is refused
(the rest of the dashboard works); with a wrong one, one log line says so at start and those keys are not
loaded (the environment's keys still are).

Redis keys (p = REDIS_PREFIX):
- `p storedkey` hash, fingerprint → JSON {"s": sealed key ("v1.<nonce>.<ciphertext>"), "at": added_at}
- `p removedkey` hash, fingerprint → removed_at (keys from the environment removed on the dashboard)
- `p keynote` hash, fingerprint → JSON [note, tags, disabled_by_hand_at, updated_at]
- `p meta` hash, fields `key_salt` (hex, the scrypt salt, set once) and `key_check` (a known text sealed with
  the derived key, set once: tells a wrong secret even before any key is stored)
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import ujson

from ..admin.keystore import KeyStore, NoteRow
from ..errors import ApiError
from .keycrypt import CHECK_AAD, CHECK_TEXT, SALT_BYTES, CannotOpen, KeyCipher
from .redis_backend import RedisBackend

log = logging.getLogger("keyloom.keys")
KIND = "keys"


class RedisKeyStore(KeyStore):
    def __init__(self, backend: RedisBackend, secret: str):
        """`secret`: KEY_ENCRYPTION_SECRET ("" when unset)."""
        self.backend = backend
        self.secret = secret
        self.stored_name = backend.key("storedkey")
        self.removed_name = backend.key("removedkey")
        self.notes_name = backend.key("keynote")
        self.meta = backend.key("meta")
        self._cipher: KeyCipher | None = None
        self.wrong_secret = False
        self._said: set[str] = set()  # what was logged already (once per process, not once per reload)

    # -- the cipher --------------------------------------------------------------------------------

    async def _ready(self) -> KeyCipher | None:
        """The cipher for the shared salt, checked against the shared check value (once); None without a
        secret or with a wrong one."""
        if not self.secret or self.wrong_secret:
            return None
        if self._cipher is not None:
            return self._cipher
        client = self.backend.client

        async def salt() -> bytes:
            await client.hsetnx(self.meta, "key_salt", os.urandom(SALT_BYTES).hex())
            value: Any = await client.hget(self.meta, "key_salt")
            return bytes.fromhex(value.decode("ascii"))

        cipher = await asyncio.get_running_loop().run_in_executor(
            None, KeyCipher.derive, self.secret, await self.backend.call("reading the key salt", salt))

        async def check() -> Any:
            await client.hsetnx(self.meta, "key_check", cipher.seal(CHECK_TEXT, CHECK_AAD))
            return await client.hget(self.meta, "key_check")

        try:
            if cipher.open((await self.backend.call("reading the key check", check)).decode("ascii"),
                           CHECK_AAD) != CHECK_TEXT:
                raise CannotOpen("unexpected check text")
        except (CannotOpen, UnicodeDecodeError):
            self.wrong_secret = True
            log.error("KEY_ENCRYPTION_SECRET is not the secret the keys added on the dashboard were stored with in "
                      "Redis: those keys are not loaded and adding keys on the dashboard is refused (the keys "
                      "from GEMINI_API_KEYS are served). Set the secret they were stored with, the same on every "
                      "replica.")
            return None
        self._cipher = cipher
        return cipher

    def refuse_adding(self) -> ApiError | None:
        if not self.secret:
            return ApiError(409, "Adding keys on the dashboard needs KEY_ENCRYPTION_SECRET when REDIS_URL is set "
                                 "(keys are stored in Redis encrypted with it). Set KEY_ENCRYPTION_SECRET, the same "
                                 "on every replica, and restart; or add the keys to GEMINI_API_KEYS.",
                            code="key_encryption_secret_missing", param="keys")
        if self.wrong_secret:
            return ApiError(409, "KEY_ENCRYPTION_SECRET is not the secret the keys in Redis were stored with, so "
                                 "adding keys on the dashboard is refused. Set the secret they were stored with.",
                            code="key_encryption_secret_wrong", param="keys")
        return None

    def _say_once(self, what: str, *args: Any) -> None:
        if what not in self._said:
            self._said.add(what)
            log.error(what, *args)

    # -- keys --------------------------------------------------------------------------------------

    def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        self.backend.subscribe(KIND, lambda _data: on_change())
        self.backend.on_return(on_change)

    async def stored(self) -> list[str]:
        entries: dict[bytes, bytes] = await self.backend.call(
            "reading the keys added on the dashboard", lambda: self.backend.client.hgetall(self.stored_name))
        cipher = await self._ready()  # at start even without keys: a wrong secret is said at once
        if not entries:
            return []
        if cipher is None:
            if not self.secret:
                self._say_once("%d key(s) added on the dashboard are stored encrypted in Redis but "
                               "KEY_ENCRYPTION_SECRET is not set: they are not loaded. Set KEY_ENCRYPTION_SECRET "
                               "(the secret they were stored with) on every replica.", len(entries))
            return []
        found: list[tuple[float, str]] = []
        unreadable = 0
        for fp, raw in entries.items():
            try:
                entry = ujson.loads(raw)
                found.append((float(entry["at"]), cipher.open(str(entry["s"]), fp.decode("ascii"))))
            except (CannotOpen, ValueError, TypeError, KeyError, UnicodeDecodeError):
                unreadable += 1
        if unreadable:
            self._say_once("%d key(s) added on the dashboard cannot be opened with KEY_ENCRYPTION_SECRET (altered in "
                           "Redis?): they are not loaded; remove them on the dashboard and add them again.",
                           unreadable)
        return [secret for _, secret in sorted(found, key=lambda f: f[0])]

    async def removed(self) -> set[str]:
        fps = await self.backend.call("reading the removed keys",
                                      lambda: self.backend.client.hkeys(self.removed_name))
        return {fp.decode("ascii", "replace") for fp in fps}

    async def add(self, keys: list[tuple[str, str]], now: float) -> None:
        refused = self.refuse_adding()
        if refused is not None:
            raise refused
        cipher = await self._ready()
        if cipher is None:  # the check just found the secret wrong
            raise self.refuse_adding() or ApiError(409, "Keys cannot be stored right now.")
        sealed = {fp: ujson.dumps({"s": cipher.seal(secret, fp), "at": now}) for fp, secret in keys}

        async def write() -> None:
            pipe = self.backend.client.pipeline(transaction=True)
            pipe.hset(self.stored_name, mapping=sealed)  # type: ignore[arg-type]
            pipe.hdel(self.removed_name, *sealed)
            await pipe.execute()

        await self.backend.call("storing the keys", write)
        self.backend.publish(KIND)

    async def remove(self, fps: list[str], keep_out: list[str], now: float) -> None:
        if not fps:
            return

        async def write() -> None:
            pipe = self.backend.client.pipeline(transaction=True)
            pipe.hdel(self.stored_name, *fps)
            pipe.hdel(self.notes_name, *fps)
            if keep_out:
                pipe.hset(self.removed_name, mapping={fp: repr(now) for fp in keep_out})
            await pipe.execute()

        await self.backend.call("removing the keys", write)
        self.backend.publish(KIND)

    # -- notes -------------------------------------------------------------------------------------

    async def notes(self, fps: list[str] | None = None) -> dict[str, NoteRow]:
        client = self.backend.client
        if fps is None:
            raw = await self.backend.call("reading the key notes", lambda: client.hgetall(self.notes_name))
            pairs = [(fp.decode("ascii", "replace"), v) for fp, v in raw.items()]
        elif not fps:
            return {}
        else:
            values = await self.backend.call("reading the key notes", lambda: client.hmget(self.notes_name, fps))
            pairs = list(zip(fps, values, strict=True))
        out: dict[str, NoteRow] = {}
        for fp, value in pairs:
            if value is None:
                continue
            try:
                note, tags, at, updated = ujson.loads(value)
                out[fp] = (str(note), [str(t) for t in tags], None if at is None else float(at), float(updated))
            except (ValueError, TypeError):
                continue
        return out

    async def save_note(self, fp: str, note: str, tags: list[str], disabled_by_hand_at: float | None,
                        now: float) -> None:
        value = ujson.dumps([note, tags, disabled_by_hand_at, now], ensure_ascii=False)
        await self.backend.call("saving the key note", lambda: self.backend.client.hset(self.notes_name, fp, value))
