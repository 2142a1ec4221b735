"""Dashboard sign-in sessions: signed cookies backed by a server-side table, so sign-out really ends one.

The cookie holds a random token and its HMAC signature. The signing key is derived from a
random secret kept in the database and from the admin password, so changing ADMIN_PASSWORD
ends every session at once. Only a hash of each token is stored; each session has its own
CSRF token, which the page sends back in a header on every state-changing call.

With REDIS_URL the same sessions live in Redis, shared by every replica (server/store/redis_sessions.py).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import Clock
from ..store.db import Database

COOKIE = "keyloom_session"      # the dashboard's
CHAT_COOKIE = "keyloom_chat"   # the chat playground's
MAX_SESSIONS = 200  # oldest go first: a client cannot make the server hold more


@dataclass
class Session:
    token_hash: str
    csrf: str
    created_at: float
    expires_at: float
    client_ip: str | None

    def csrf_ok(self, sent: str | None) -> bool:
        """The X-CSRF-Token a state-changing call sent is this session's (constant time)."""
        return hmac.compare_digest((sent or "").encode("utf-8", "replace"), self.csrf.encode("ascii"))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


class SignedSessions:
    """What every session store shares: the cookie's signature, the sessions held in memory (`find` is on the
    path of every dashboard call, so it never waits on storage) and the cap. Where sessions are kept is the
    subclass's: `Sessions` (SQLite) or `server.store.redis_sessions.RedisSessions` (shared by replicas)."""

    def __init__(self, clock: Clock, password: Callable[[], str], hours: Callable[[], float],
                 table: str = "admin_session", secret_name: str = "session_secret"):
        self.table = table
        self.secret_name = secret_name
        self.clock = clock
        self.password = password
        self.hours = hours
        self._secret = b""
        self._by_hash: dict[str, Session] = {}

    async def load(self) -> None:
        raise NotImplementedError

    async def create(self, client_ip: str | None) -> tuple[str, Session]:
        """→ (cookie value, session)."""
        raise NotImplementedError

    async def end(self, session: Session) -> None:
        raise NotImplementedError

    def _signing_key(self) -> bytes:
        return hmac.new(self._secret, self.password().encode("utf-8"), hashlib.sha256).digest()

    def _sign(self, token: str) -> str:
        return hmac.new(self._signing_key(), token.encode("ascii"), hashlib.sha256).hexdigest()

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None (bad signature, unknown, expired)."""
        if not cookie or len(cookie) > 200:
            return None
        token, _, sig = cookie.partition(".")
        if not token or not sig or not token.isascii():
            return None
        if not hmac.compare_digest(sig.encode("ascii", "replace"), self._sign(token).encode("ascii")):
            return None
        s = self._by_hash.get(_hash(token))
        if s is None or s.expires_at <= self.clock.time():
            return None
        return s

    def _new(self, client_ip: str | None) -> tuple[str, Session, list[str]]:
        """A new session (not yet kept) → (token, session, hashes to drop: expired, then the oldest beyond
        MAX_SESSIONS); the dropped ones are out of memory already."""
        token = secrets.token_urlsafe(32)
        now = self.clock.time()
        s = Session(_hash(token), secrets.token_urlsafe(24), now, now + self.hours() * 3600.0, client_ip)
        stale = [h for h, x in self._by_hash.items() if x.expires_at <= now]
        while len(self._by_hash) - len(stale) >= MAX_SESSIONS:
            stale.append(next(h for h in self._by_hash if h not in stale))
        for h in stale:
            self._by_hash.pop(h, None)
        return token, s, stale

    def __len__(self) -> int:
        return len(self._by_hash)


class Sessions(SignedSessions):
    """Sessions of one page: the dashboard's (admin_session, signed with ADMIN_PASSWORD) or the chat
    playground's (chat_session, signed with PASSWORD), kept in SQLite."""

    def __init__(self, db: Database, clock: Clock, password: Callable[[], str], hours: Callable[[], float],
                 table: str = "admin_session", secret_name: str = "session_secret"):
        super().__init__(clock, password, hours, table, secret_name)
        self.db = db

    async def load(self) -> None:
        rows = await self.db.fetchall("SELECT value FROM meta WHERE name = ?", (self.secret_name,))
        if rows:
            secret = rows[0][0]
        else:
            secret = secrets.token_hex(32)
            await self.db.write([("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
                                  [(self.secret_name, secret)])])
        self._secret = bytes.fromhex(secret)
        now = self.clock.time()
        for h, csrf, created, expires, ip in await self.db.fetchall(
                f"SELECT token_hash, csrf, created_at, expires_at, client_ip FROM {self.table} WHERE expires_at > ? "
                "ORDER BY created_at", (now,)):
            self._by_hash[h] = Session(h, csrf, created, expires, ip)

    async def create(self, client_ip: str | None) -> tuple[str, Session]:
        """→ (cookie value, session)."""
        token, s, stale = self._new(client_ip)
        await self.db.write([
            (f"DELETE FROM {self.table} WHERE token_hash = ?", [(h,) for h in stale]),
            (f"INSERT INTO {self.table} (token_hash, csrf, created_at, expires_at, client_ip) VALUES (?, ?, ?, ?, ?)",
             [(s.token_hash, s.csrf, s.created_at, s.expires_at, s.client_ip)])])
        self._by_hash[s.token_hash] = s
        return f"{token}.{self._sign(token)}", s

    async def end(self, session: Session) -> None:
        await self.db.write([(f"DELETE FROM {self.table} WHERE token_hash = ?", [(session.token_hash,)])])
        self._by_hash.pop(session.token_hash, None)  # after: a sign-out the disk refused can be tried again
