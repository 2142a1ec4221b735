"""Dashboard and chat playground sessions shared by every replica through Redis (REDIS_URL set).

Why: behind a load balancer a browser's next call may reach any replica; a sign-in must work on all of them,
and a sign-out must end the session everywhere. `find` runs on every dashboard call and stays a read of
memory: each replica holds the sessions in memory, writes a change to Redis, then publishes it; the other
replicas apply the notice at once (it carries the session, never the cookie's token: only its hash is kept)
and read everything again when Redis comes back after being away (a notice may have been lost).

Redis keys (p = REDIS_PREFIX):
- `p meta` hash, field `session_secret` / `chat_session_secret`: the random signing secret, set once (HSETNX)
  so every replica signs alike (the key is derived from it and the password, as in SQLite mode).
- `p session:{table}` sorted set: token hash → expires_at (the index, trimmed to MAX_SESSIONS, oldest first).
- `p session:{table}:{token hash}` string: JSON [csrf, created_at, expires_at, client_ip], with a TTL that
  ends it when the session ends (the in-memory check ends it exactly).
"""
from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from typing import Any

import ujson

from ..admin.sessions import MAX_SESSIONS, Session, SignedSessions
from ..clock import Clock
from .redis_backend import RedisBackend


class RedisSessions(SignedSessions):
    def __init__(self, backend: RedisBackend, clock: Clock, password: Callable[[], str],
                 hours: Callable[[], float], table: str = "admin_session", secret_name: str = "session_secret"):
        super().__init__(clock, password, hours, table, secret_name)
        self.backend = backend
        self.index = backend.key("session", table)
        self.kind = f"session:{table}"
        backend.subscribe(self.kind, self._apply)
        backend.on_return(self._reload)

    def _key(self, token_hash: str) -> str:
        return f"{self.index}:{token_hash}"

    async def load(self) -> None:
        async def secret() -> bytes:
            client, meta = self.backend.client, self.backend.key("meta")
            await client.hsetnx(meta, self.secret_name, secrets.token_hex(32))
            value: Any = await client.hget(meta, self.secret_name)
            return bytes.fromhex(value.decode("ascii"))

        self._secret = await self.backend.call("reading the session secret", secret)
        await self._reload()

    async def _reload(self) -> None:
        """Every live session from Redis (at start, and when Redis is back: notices may have been lost)."""
        async def read() -> dict[str, Session]:
            client, now = self.backend.client, self.clock.time()
            found_hashes: Any = await client.zrangebyscore(self.index, f"({now!r}", "+inf")
            hashes = [h.decode("ascii") for h in found_hashes]
            values = await client.mget([self._key(h) for h in hashes]) if hashes else []
            found: dict[str, Session] = {}
            for h, raw in zip(hashes, values, strict=True):
                s = _session(h, raw)
                if s is not None and s.expires_at > now:
                    found[h] = s
            return found

        self._by_hash = await self.backend.call("reading the sessions", read)

    async def create(self, client_ip: str | None) -> tuple[str, Session]:
        token, s, stale = self._new(client_ip)
        ttl = max(1, math.ceil(s.expires_at - s.created_at))

        async def write() -> list[str]:
            client = self.backend.client
            pipe = client.pipeline(transaction=True)
            pipe.set(self._key(s.token_hash), ujson.dumps([s.csrf, s.created_at, s.expires_at, s.client_ip]),
                     ex=ttl)
            pipe.zadd(self.index, {s.token_hash: s.expires_at})
            pipe.zremrangebyscore(self.index, "-inf", s.created_at)  # ended: their strings expired by TTL
            pipe.zcard(self.index)
            count = (await pipe.execute())[-1]
            dropped: list[str] = []
            if count > MAX_SESSIONS:  # the cap holds for the cluster: the ones that end soonest go
                popped: Any = await client.zpopmin(self.index, count - MAX_SESSIONS)
                dropped = [h.decode("ascii") for h, _ in popped]
                await client.delete(*[self._key(h) for h in dropped])
            return dropped

        dropped = await self.backend.call("signing in", write)
        for h in dropped:
            self._by_hash.pop(h, None)
        self._by_hash[s.token_hash] = s
        self.backend.publish(self.kind, {"add": [s.token_hash, s.csrf, s.created_at, s.expires_at, s.client_ip],
                                         "end": [*stale, *dropped]})
        return f"{token}.{self._sign(token)}", s

    async def end(self, session: Session) -> None:
        """Ended in Redis first: a sign-out Redis did not take (503) leaves the session as it was everywhere, so
        signing out again works, rather than ending it here only and having it come back."""
        async def delete() -> None:
            pipe = self.backend.client.pipeline(transaction=True)
            pipe.delete(self._key(session.token_hash))
            pipe.zrem(self.index, session.token_hash)
            await pipe.execute()

        await self.backend.call("signing out", delete)
        self._by_hash.pop(session.token_hash, None)
        self.backend.publish(self.kind, {"end": [session.token_hash]})

    def _apply(self, data: Any) -> None:
        """Another replica signed someone in or out."""
        if not isinstance(data, dict):
            return
        for h in data.get("end") or ():
            if isinstance(h, str):
                self._by_hash.pop(h, None)
        added = data.get("add")
        if isinstance(added, list) and len(added) == 5 and isinstance(added[0], str):
            s = _session(added[0], ujson.dumps(added[1:]))
            if s is not None and s.expires_at > self.clock.time():
                self._by_hash[s.token_hash] = s
                while len(self._by_hash) > MAX_SESSIONS:  # memory stays bounded even if a notice of an end is lost
                    self._by_hash.pop(next(iter(self._by_hash)))


def _session(token_hash: str, raw: bytes | str | None) -> Session | None:
    """A stored session, or None when it is gone or unreadable."""
    if raw is None:
        return None
    try:
        csrf, created, expires, ip = ujson.loads(raw)
        return Session(token_hash, str(csrf), float(created), float(expires), ip if isinstance(ip, str) else None)
    except (ValueError, TypeError):
        return None
