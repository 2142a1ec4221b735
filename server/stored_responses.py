"""The Responses API's stored answers: `previous_response_id`, and GET / DELETE /v1/responses/{id}.

OpenAI's API stores every answer unless told `store: false` (Codex says so, and sends the whole history each
turn; the openai SDK and the Agents SDK may continue by id instead). A stored answer keeps the conversation
up to it as input items, so continuing from it is one read. Reads happen only for requests that name an
id. One process (SQLite) writes an answer in the background while its client already has it: a continuation
that comes meanwhile is served from the answer pending in memory. Replicas (Redis) write it before the client
has its end, for up to WAIT_FOR_WRITE seconds while Redis is reachable: a client that continues at once on
another replica finds it. Nothing here holds a key: answers carry key fingerprints at most (in sealed thought
signatures).

Bounded twice, since any client can make Keyloom store: by age (RESPONSES_STORE_DAYS) and by total size
(RESPONSES_STORE_MB; the oldest go first, and one answer over an eighth of it is not stored at all).

Stored in SQLite (`StoredResponses`) or, with REDIS_URL, in Redis (server/store/redis_responses.py), so that
any replica continues a conversation another one answered; both on `ResponseStore`.
"""
from __future__ import annotations

import abc
import asyncio
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

import ujson

from .clock import Clock
from .errors import ApiError
from .settings import Settings
from .store.db import Database

log = logging.getLogger("keyloom.responses")

_ID = re.compile(r"^resp_[A-Za-z0-9]{1,64}$")


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def not_found(rid: str) -> ApiError:
    return ApiError(404, f"No response with id '{rid[:80]}' is stored here (it was never stored, was sent with "
                         "store=false, or has expired: RESPONSES_STORE_DAYS).", param="previous_response_id",
                    code="response_not_found")


def _dumps(obj: Any) -> str:
    return ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False)


# seconds an answer waits for its write to a shared store (Redis) before its client has it; past that (Redis
# slow or away) the answer goes out and the write goes on in the background
WAIT_FOR_WRITE = 1.0


class ResponseStore(abc.ABC):
    """What every store of answers shares: ids, the pending answers, what is kept and the size cut, continuing
    a conversation. A store (SQLite: `StoredResponses`; Redis: server/store/redis_responses.py) only reads,
    writes and drops rows, so `previous_response_id` behaves alike on both."""

    def shared(self) -> bool:
        """Whether other processes read this store now (Redis, reachable): then an answer is written before its
        client has it."""
        return False

    def __init__(self, clock: Clock, settings: Callable[[], Settings]):
        self.clock = clock
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        # answers on their way to the store: a client may continue from one the moment it has it
        self._pending: dict[str, tuple[str, str]] = {}

    # -- what a store provides -------------------------------------------------------------------------

    @abc.abstractmethod
    async def load(self) -> None:
        """Read what the store keeps in memory (at start)."""

    @abc.abstractmethod
    async def _fetch(self, rid: str, since: float) -> tuple[str, str] | None:
        """(response, context) as stored, if stored at or after `since`; else None."""

    @abc.abstractmethod
    async def _remove(self, rid: str) -> None:
        """Drop one answer (DELETE /v1/responses/{id})."""

    @abc.abstractmethod
    async def _store(self, rid: str, doc: str, ctx: str, size: int, cap: int, days: float) -> None:
        """Write one answer, drop those older than `days`, then the oldest until all fit in `cap` bytes."""

    # -- shared --------------------------------------------------------------------------------------

    async def get(self, rid: str) -> tuple[dict[str, Any], list[Any]]:
        """(the stored Response object, the conversation up to it as input items). Raises 404."""
        if not isinstance(rid, str) or not _ID.match(rid):
            raise not_found(str(rid))
        pending = self._pending.get(rid)
        if pending is not None:
            return ujson.loads(pending[0]), ujson.loads(pending[1])
        days = self.settings().RESPONSES_STORE_DAYS
        found = await self._fetch(rid, self.clock.time() - days * 86400)
        if found is None:
            raise not_found(rid)
        response, context = found
        return ujson.loads(response), ujson.loads(context)

    async def delete(self, rid: str) -> None:
        await self.get(rid)  # 404 when there is none
        await self.drain()  # an answer still on its way is deleted once it has arrived
        await self._remove(rid)

    async def continued(self, req: dict[str, Any]) -> dict[str, Any]:
        """The request with the stored conversation of `previous_response_id` before its own input."""
        rid = req.get("previous_response_id")
        if rid is None:
            return req
        _, context = await self.get(rid)
        own = req.get("input")
        if isinstance(own, str):
            own = [{"role": "user", "content": own}]
        elif own is None:
            own = []
        if not isinstance(own, list):
            return req  # the translator refuses it with its own words
        return {**req, "input": [*context, *own]}

    async def keep(self, request: dict[str, Any], response: dict[str, Any]) -> bool:
        """Store the answer unless the client said store=false (False when it is not kept). Called before the
        client has the answer's end: on a shared store this waits for the write (WAIT_FOR_WRITE at most);
        otherwise the write goes on in the background."""
        task = self._keep(request, response)
        if task is None:
            return False
        if self.shared():
            await asyncio.wait({task}, timeout=WAIT_FOR_WRITE)  # not cancelled past it: it goes on
        return True

    def _keep(self, request: dict[str, Any], response: dict[str, Any]) -> asyncio.Task[None] | None:
        s = self.settings()
        if request.get("store") is False or s.RESPONSES_STORE_DAYS <= 0:
            return None
        own = request.get("input")
        context = [{"role": "user", "content": own}] if isinstance(own, str) else list(own or [])
        context += [item for item in response.get("output") or () if isinstance(item, dict)]
        doc, ctx = _dumps(response), _dumps(context)
        size = len(doc.encode()) + len(ctx.encode())
        cap = int(s.RESPONSES_STORE_MB * 1024 * 1024)
        if size > cap // 8:
            log.info("response %s not stored: %d bytes, over an eighth of RESPONSES_STORE_MB", response.get("id"),
                     size)
            return None
        self._pending[response["id"]] = (doc, ctx)
        task = asyncio.ensure_future(self._write(response["id"], doc, ctx, size, cap, s.RESPONSES_STORE_DAYS))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _write(self, rid: str, doc: str, ctx: str, size: int, cap: int, days: float) -> None:
        try:
            await self._store(rid, doc, ctx, size, cap, days)
        except ApiError as e:  # the store is unreachable (Redis down): said once by the store, not per answer
            if e.code != "store_unavailable":
                log.warning("could not store response %s: %s", rid, e.message)
        except Exception:
            log.exception("could not store response %s", rid)
        finally:
            self._pending.pop(rid, None)

    async def drain(self) -> None:
        """Wait for the writes under way (at shutdown, before the store closes)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class StoredResponses(ResponseStore):
    """Stored answers in SQLite (the total size kept in memory, read once at start: one process owns the file)."""

    def __init__(self, db: Database, clock: Clock, settings: Callable[[], Settings]):
        super().__init__(clock, settings)
        self.db = db
        self.total = 0  # bytes stored, kept in step by every write (read once at start)

    async def load(self) -> None:
        (total,), = await self.db.fetchall("SELECT COALESCE(SUM(bytes), 0) FROM stored_response")
        self.total = int(total)

    async def _fetch(self, rid: str, since: float) -> tuple[str, str] | None:
        rows = await self.db.fetchall("SELECT response, context FROM stored_response WHERE id = ? AND created_at >= ?",
                                      (rid, since))
        return (rows[0][0], rows[0][1]) if rows else None

    async def _remove(self, rid: str) -> None:
        rows = await self.db.fetchall("SELECT bytes FROM stored_response WHERE id = ?", (rid,))
        await self.db.write([("DELETE FROM stored_response WHERE id = ?", [(rid,)])])
        self.total -= sum(int(b) for b, in rows)

    async def _store(self, rid: str, doc: str, ctx: str, size: int, cap: int, days: float) -> None:
        now = self.clock.time()
        batches: list[tuple[str, list[tuple[Any, ...]]]] = [
            ("INSERT OR REPLACE INTO stored_response (id, created_at, response, context, bytes) "
             "VALUES (?, ?, ?, ?, ?)", [(rid, now, doc, ctx, size)]),
            ("DELETE FROM stored_response WHERE created_at < ?", [(now - days * 86400,)])]
        await self.db.write(batches)
        self.total += size  # an over-estimate after the age cut: _trim recounts before it drops anything
        if self.total > cap:
            await self._trim(cap)

    async def _trim(self, cap: int) -> None:
        """Oldest first, until the total fits the cap again (and the total is recounted from the table)."""
        (total,), = await self.db.fetchall("SELECT COALESCE(SUM(bytes), 0) FROM stored_response")
        self.total = int(total)
        if self.total <= cap:
            return
        drop: list[tuple[str]] = []
        over = self.total - cap
        for rid, size in await self.db.fetchall("SELECT id, bytes FROM stored_response ORDER BY created_at"):
            if over <= 0:
                break
            drop.append((rid,))
            over -= int(size)
        await self.db.write([("DELETE FROM stored_response WHERE id = ?", drop)])
        (total,), = await self.db.fetchall("SELECT COALESCE(SUM(bytes), 0) FROM stored_response")
        self.total = int(total)
