"""The Responses API's stored answers: `previous_response_id`, and GET / DELETE /v1/responses/{id}.

OpenAI's API stores every answer unless told `store: false` (Codex says so, and sends the whole history each
turn; the openai SDK and the Agents SDK may continue by id instead). A stored answer keeps the conversation
up to it as input items, so continuing from it is one read. Reads happen only for requests that name an
id, and writes after the answer went out, never on the way to it. Nothing here holds a key: answers carry key
fingerprints at most (in sealed thought signatures).

Bounded twice, since any client can make Keyloom store: by age (RESPONSES_STORE_DAYS) and by total size
(RESPONSES_STORE_MB; the oldest go first, and one answer over an eighth of it is not stored at all).
"""
from __future__ import annotations

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


class StoredResponses:
    def __init__(self, db: Database, clock: Clock, settings: Callable[[], Settings]):
        self.db = db
        self.clock = clock
        self.settings = settings
        self.total = 0  # bytes stored, kept in step by every write (read once at start)
        self._tasks: set[asyncio.Task[None]] = set()
        # answers on their way to the database: a client may continue from one the moment it has it
        self._pending: dict[str, tuple[str, str]] = {}

    async def load(self) -> None:
        (total,), = await self.db.fetchall("SELECT COALESCE(SUM(bytes), 0) FROM stored_response")
        self.total = int(total)

    async def get(self, rid: str) -> tuple[dict[str, Any], list[Any]]:
        """(the stored Response object, the conversation up to it as input items). Raises 404."""
        if not isinstance(rid, str) or not _ID.match(rid):
            raise not_found(str(rid))
        pending = self._pending.get(rid)
        if pending is not None:
            return ujson.loads(pending[0]), ujson.loads(pending[1])
        days = self.settings().RESPONSES_STORE_DAYS
        rows = await self.db.fetchall("SELECT response, context FROM stored_response WHERE id = ? AND created_at >= ?",
                                      (rid, self.clock.time() - days * 86400))
        if not rows:
            raise not_found(rid)
        response, context = rows[0]
        return ujson.loads(response), ujson.loads(context)

    async def delete(self, rid: str) -> None:
        await self.get(rid)  # 404 when there is none
        await self.drain()  # an answer still on its way is deleted once it has arrived
        rows = await self.db.fetchall("SELECT bytes FROM stored_response WHERE id = ?", (rid,))
        await self.db.write([("DELETE FROM stored_response WHERE id = ?", [(rid,)])])
        self.total -= sum(int(b) for b, in rows)

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

    def keep(self, request: dict[str, Any], response: dict[str, Any]) -> bool:
        """Store the answer (in the background) unless the client said store=false; False when it is not kept."""
        s = self.settings()
        if request.get("store") is False or s.RESPONSES_STORE_DAYS <= 0:
            return False
        own = request.get("input")
        context = [{"role": "user", "content": own}] if isinstance(own, str) else list(own or [])
        context += [item for item in response.get("output") or () if isinstance(item, dict)]
        doc, ctx = _dumps(response), _dumps(context)
        size = len(doc.encode()) + len(ctx.encode())
        cap = int(s.RESPONSES_STORE_MB * 1024 * 1024)
        if size > cap // 8:
            log.info("response %s not stored: %d bytes, over an eighth of RESPONSES_STORE_MB", response.get("id"),
                     size)
            return False
        self._pending[response["id"]] = (doc, ctx)
        task = asyncio.ensure_future(self._write(response["id"], doc, ctx, size, cap, s.RESPONSES_STORE_DAYS))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _write(self, rid: str, doc: str, ctx: str, size: int, cap: int, days: float) -> None:
        now = self.clock.time()
        try:
            batches: list[tuple[str, list[tuple[Any, ...]]]] = [
                ("INSERT OR REPLACE INTO stored_response (id, created_at, response, context, bytes) "
                 "VALUES (?, ?, ?, ?, ?)", [(rid, now, doc, ctx, size)]),
                ("DELETE FROM stored_response WHERE created_at < ?", [(now - days * 86400,)])]
            await self.db.write(batches)
            self.total += size  # an over-estimate after the age cut: _trim recounts before it drops anything
            if self.total > cap:
                await self._trim(cap)
        except Exception:
            log.exception("could not store response %s", rid)
        finally:
            self._pending.pop(rid, None)

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

    async def drain(self) -> None:
        """Wait for the writes under way (at shutdown, before the database closes)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
