"""The chat playground's saved conversations in Redis (REDIS_URL set): every replica lists, reads and writes the
same conversations, and MAX_CONVERSATIONS / MAX_CONVERSATIONS_MB hold for the cluster, not per replica.

Everything but the storage (validation, titles, caps arithmetic, export, import) is `ConversationStore`'s, in
server/conversations.py, shared with the SQLite store.

Keys (p = REDIS_PREFIX):
- `p conv:id:{cid}` hash: title, model (absent when none), params, messages (JSON), search (lower-cased text
  searched by `?q=`), bytes, count (messages), created_at, updated_at (epoch seconds).
- `p conv:ids` sorted set cid → updated_at: the listing's order, and its size is the number kept.
- `p conv:bytes` string: the bytes of every conversation together (what MAX_CONVERSATIONS_MB bounds).

Why WATCH/MULTI: the caps are checked against what the whole cluster stores, and two replicas writing at once
must not both pass a check that only one of them fits; an optimistic transaction retries the loser. Writes
here are rare (a person saving a chat), so retries are cheap.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import ujson
from redis.exceptions import WatchError

from ..clock import Clock
from ..conversations import LIST_LIMIT, ConversationStore, check_room, not_found, summary, whole
from ..settings import Settings
from .redis_backend import RedisBackend

FIELDS = ("title", "model", "params", "messages", "created_at", "updated_at")
SUMMARY_FIELDS = ("title", "model", "created_at", "updated_at", "count")


def _text(raw: Any) -> str | None:
    """A value as Redis returns it (bytes, or None when absent) → text."""
    return None if raw is None else raw.decode("utf-8", "surrogatepass")


def _enc(text: str) -> bytes:
    """Text as Redis stores it (a title may hold what strict UTF-8 refuses, as SQLite would take it)."""
    return text.encode("utf-8", "surrogatepass")


def _number(raw: Any) -> float:
    return float(raw) if raw is not None else 0.0


class RedisConversations(ConversationStore):
    def __init__(self, backend: RedisBackend, clock: Clock, settings: Callable[[], Settings]):
        super().__init__(clock, settings)
        self.r = backend
        self.ids = backend.key("conv", "ids")
        self.total = backend.key("conv", "bytes")

    def _key(self, cid: str) -> str:
        return self.r.key("conv", "id", cid)

    async def load(self) -> None:
        """Nothing to read at start: counts live in Redis, read at each write."""

    async def list(self, query: str = "") -> list[dict[str, Any]]:
        needle = query.strip().lower()

        async def read() -> list[dict[str, Any]]:
            client = self.r.client
            if not needle:
                ids = [_text(x) or "" for x in await client.zrevrange(self.ids, 0, LIST_LIMIT - 1)]
            else:
                every = [_text(x) or "" for x in await client.zrevrange(self.ids, 0, -1)]
                async with client.pipeline(transaction=False) as pipe:
                    for cid in every:
                        pipe.hget(self._key(cid), "search")
                    texts = await pipe.execute()
                ids = [cid for cid, text in zip(every, texts, strict=True)
                       if text is not None and needle in (_text(text) or "")][:LIST_LIMIT]
            async with client.pipeline(transaction=False) as pipe:
                for cid in ids:
                    pipe.hmget(self._key(cid), SUMMARY_FIELDS)
                rows = await pipe.execute()
            return [summary((cid, _text(title), _text(model), _number(created), _number(updated),
                             int(count or 0)))
                    for cid, (title, model, created, updated, count) in zip(ids, rows, strict=True)
                    if title is not None]

        return await self.r.call("listing conversations", read)

    async def get(self, cid: str) -> dict[str, Any]:
        values = await self.r.call("reading the conversation", lambda: self.r.client.hmget(self._key(cid), FIELDS))
        title, model, params, messages, created, updated = values
        if title is None:
            raise not_found(cid)
        return whole((cid, _text(title), _text(model), _text(params), _text(messages), _number(created),
                      _number(updated)))

    async def _insert(self, cid: str, model: str | None, row: tuple[str, str, str, str, int], now: float) -> None:
        await self._write(cid, model, row, now, adding=True)

    async def _replace(self, cid: str, model: str | None, row: tuple[str, str, str, str, int], now: float) -> None:
        await self._write(cid, model, row, now, adding=False)

    async def _write(self, cid: str, model: str | None, row: tuple[str, str, str, str, int], now: float,
                     adding: bool) -> None:
        title, params, messages, search, size = row
        key = self._key(cid)

        async def attempt(pipe: Any) -> None:
            await pipe.watch(self.ids, self.total, key)
            count = int(await pipe.zcard(self.ids))
            total = int(await pipe.get(self.total) or 0)
            old = 0
            if not adding:
                raw = await pipe.hget(key, "bytes")
                if raw is None:
                    raise not_found(cid)
                old = int(raw)
            check_room(self.settings(), count, total, size, old, adding)
            pipe.multi()
            fields: dict[str, Any] = {"title": _enc(title), "params": params, "messages": messages,
                                      "search": _enc(search), "bytes": size, "count": _message_count(messages),
                                      "updated_at": repr(now)}
            if adding:
                fields["created_at"] = repr(now)
            if model is None:
                pipe.hdel(key, "model")
            else:
                fields["model"] = _enc(model)
            pipe.hset(key, mapping=fields)
            pipe.zadd(self.ids, {cid: now})
            pipe.incrby(self.total, size - old)
            await pipe.execute()

        await self.r.call("saving the conversation", lambda: self._transaction(attempt))

    async def delete(self, cid: str) -> None:
        key = self._key(cid)

        async def attempt(pipe: Any) -> None:
            await pipe.watch(key)
            raw = await pipe.hget(key, "bytes")
            if raw is None:
                raise not_found(cid)
            pipe.multi()
            pipe.delete(key)
            pipe.zrem(self.ids, cid)
            pipe.decrby(self.total, int(raw))
            await pipe.execute()

        await self.r.call("deleting the conversation", lambda: self._transaction(attempt))

    async def _transaction(self, attempt: Callable[[Any], Awaitable[None]]) -> None:
        """Run `attempt` (WATCH, read, check, MULTI, write) until no other writer got in between."""
        while True:
            async with self.r.client.pipeline(transaction=True) as pipe:
                try:
                    await attempt(pipe)
                    return
                except WatchError:
                    continue


def _message_count(messages: str) -> int:
    """Messages in the stored JSON list (the listing shows it; SQLite computes it with json_array_length)."""
    return len(ujson.loads(messages))
