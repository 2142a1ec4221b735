"""Client key definitions in Redis (REDIS_URL set): a key made, changed or removed on one replica's dashboard is
in force on every replica within a notice (about a second at worst: a lost notice is healed by the reload when
Redis comes back).

Keys (p = REDIS_PREFIX):
- `p clientkey` hash: key id → JSON of its definition (client_keys.STORED: name, limits, models, expiry, on/off,
  the key's SHA-256 and shown prefix; never the key itself).
- reads `p ckusage:{day}` (the flush's: field "{key_id}\\t{model}\\t{requests|tokens}" → count) for the history.
Change notice: kind "clientkeys" on the backend's channel; every other replica reads the hash again.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import ujson

from ..client_keys import STORED, ClientKey
from .redis_backend import RedisBackend, StoreUnavailable

log = logging.getLogger("keyloom.redis")

KIND = "clientkeys"


def _days(since: str, until: str) -> list[str]:
    """Every day from `since` up to, not including, `until` (YYYY-MM-DD)."""
    first, end = dt.date.fromisoformat(since), dt.date.fromisoformat(until)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(max(0, (end - first).days))]


class RedisClientKeyStore:
    def __init__(self, backend: RedisBackend):
        self.r = backend
        self.hash = backend.key("clientkey")

    async def load_all(self) -> list[ClientKey]:
        raw = await self.r.call("reading client keys", lambda: self.r.client.hgetall(self.hash))
        out = []
        for key_id, doc in raw.items():
            try:
                fields: dict[str, Any] = ujson.loads(doc)
                out.append(ClientKey(**{name: fields[name] for name in STORED}, source="dashboard"))
            except (ValueError, KeyError, TypeError):
                log.warning("client key %s in Redis cannot be read; skipped", key_id.decode(errors="replace")[:40])
        return out

    async def put(self, ck: ClientKey) -> None:
        doc = ujson.dumps({name: getattr(ck, name) for name in STORED})
        await self.r.call("saving the client key", lambda: self.r.client.hset(self.hash, ck.id, doc))
        self.r.publish(KIND, ck.id)

    async def delete(self, key_id: str) -> None:
        await self.r.call("removing the client key", lambda: self.r.client.hdel(self.hash, key_id))
        self.r.publish(KIND, key_id)

    async def history(self, since: str, until: str) -> list[tuple[str, str, int, int]]:
        days = _days(since, until)

        async def read() -> list[dict[bytes, bytes]]:
            async with self.r.client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(self.r.key("ckusage", day))
                return list(await pipe.execute())

        sums: dict[tuple[str, str], list[int]] = {}
        for day, counts in zip(days, await self.r.call("reading client key usage", read), strict=True):
            for field, value in counts.items():
                parts = field.decode(errors="replace").split("\t")
                if len(parts) != 3:
                    continue
                key_id, _model, metric = parts
                s = sums.setdefault((key_id, day), [0, 0])
                if metric == "requests":
                    s[0] += int(value)
                elif metric == "tokens":
                    s[1] += int(value)
        return [(key_id, day, req, tok) for (key_id, day), (req, tok) in sums.items()]

    def on_change(self, reload: Callable[[], Awaitable[None]]) -> None:
        async def quietly() -> None:
            try:
                await reload()
            except StoreUnavailable:  # the backend said once that Redis left, and reloads when it is back
                pass

        self.r.subscribe(KIND, lambda _data: quietly())
        self.r.on_return(quietly)
