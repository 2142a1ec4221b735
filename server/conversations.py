"""Saved conversations of the chat playground: in SQLite (`Conversations`), or in Redis when REDIS_URL is set
(server/store/redis_conversations.py); both on `ConversationStore`, which holds everything but the storage.

A conversation is read and written whole (title, model, parameters, messages); validation here keeps
what is stored small and well-formed whatever a client sends. Exports are Markdown (to read) or JSON
(to import again); an import always creates a new conversation.
"""
from __future__ import annotations

import abc
import secrets
from collections.abc import Callable
from typing import Any

import ujson

from .clock import Clock
from .errors import ApiError, bad_request, encodable
from .settings import Settings
from .store.db import Database

ROLES = ("system", "user", "assistant")
PARAMS: dict[str, tuple[type, Any, Any]] = {  # name → (type, lowest, highest)
    "temperature": (float, 0, 2), "top_p": (float, 0, 1), "top_k": (int, 1, 1000),
    "presence_penalty": (float, -2, 2), "frequency_penalty": (float, -2, 2), "max_tokens": (int, 1, 1_000_000),
    "reasoning_effort": (str, None, None), "stream": (bool, None, None), "system": (str, None, None)}
EFFORTS = ("", "none", "minimal", "low", "medium", "high")
MAX_MESSAGES = 2000
MAX_TEXT = 1_000_000
MAX_IMAGE = 20 * 1024 * 1024
MAX_TITLE = 200
EXPORT_FORMAT = "keyloom-conversation/1"


def not_found(cid: str) -> ApiError:
    return ApiError(404, f"No conversation {cid!r}.", code="conversation_not_found")


def _params(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad_request("params must be an object", "params")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in PARAMS:
            raise bad_request(f"params.{name} is not a parameter the playground keeps", f"params.{name}")
        if value is None:
            continue
        kind, lo, hi = PARAMS[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise bad_request(f"params.{name} must be a {kind.__name__}", f"params.{name}")
        if lo is not None and not lo <= value <= hi:
            raise bad_request(f"params.{name} must be between {lo} and {hi}", f"params.{name}")
        if name == "reasoning_effort" and value not in EFFORTS:
            raise bad_request(f"params.reasoning_effort must be one of {', '.join(e for e in EFFORTS if e)}",
                              "params.reasoning_effort")
        if name == "system" and isinstance(value, str) and len(value) > MAX_TEXT:
            raise bad_request("params.system is too long", "params.system")
        if isinstance(value, str) and not encodable(value):
            raise bad_request(f"params.{name} is not valid Unicode text", f"params.{name}")
        out[name] = value
    return out


def _messages(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_MESSAGES:
        raise bad_request(f"messages must be a list of at most {MAX_MESSAGES} messages", "messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad_request(f"{where} must be an object with role system, user or assistant", where)
        content = m.get("content", "")
        if not isinstance(content, str) or len(content) > MAX_TEXT:
            raise bad_request(f"{where}.content must be text (at most {MAX_TEXT} characters)", f"{where}.content")
        msg: dict[str, Any] = {"role": m["role"], "content": content}
        images = m.get("images") or []
        if not isinstance(images, list) or not all(
                isinstance(x, str) and x.startswith("data:image/") and len(x) <= MAX_IMAGE for x in images):
            raise bad_request(f"{where}.images must be image data URLs", f"{where}.images")
        if images:
            msg["images"] = images
        for field, kind in (("reasoning", str), ("error", str), ("model", str)):
            if m.get(field) is not None:
                if not isinstance(m[field], kind) or len(m[field]) > MAX_TEXT:
                    raise bad_request(f"{where}.{field} must be text", f"{where}.{field}")
                msg[field] = m[field]
        usage = m.get("usage")
        if usage is not None:
            if not isinstance(usage, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in usage.values()) or len(usage) > 10:
                raise bad_request(f"{where}.usage must hold token counts", f"{where}.usage")
            msg["usage"] = usage
        out.append(msg)
    return out


def _title(raw: Any, messages: list[dict[str, Any]]) -> str:
    if raw is not None:
        if not isinstance(raw, str) or not raw.strip():
            raise bad_request("title must be non-empty text", "title")
        return raw.strip()[:MAX_TITLE]
    first = next((m["content"] for m in messages if m["role"] == "user" and m["content"].strip()), "")
    return " ".join(first.split())[:80] or "New conversation"


def _model(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 200 or not encodable(raw):
        raise bad_request("model must be a model id", "model")
    return raw


def _search_text(title: str, messages: list[dict[str, Any]]) -> str:
    return (title + "\n" + "\n".join(m["content"] for m in messages)).lower()[:MAX_TEXT]


def _stored(title: str, params: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[str, str, str, str, int]:
    """(title, params, messages, search text, bytes): the columns as stored, and what they take."""
    p, m, search = ujson.dumps(params), ujson.dumps(messages), _search_text(title, messages)
    if not encodable(search):  # the title and every message's text are in it
        raise bad_request("the conversation holds text that is not valid Unicode (a lone surrogate such as "
                          "\\ud800); it cannot be saved")
    size = sum(len(x.encode("utf-8")) for x in (title, p, m, search))
    return title, p, m, search, size


def too_many(limit: int) -> ApiError:
    return ApiError(409, f"The playground keeps at most {limit} conversations (MAX_CONVERSATIONS); delete some "
                         "first.", code="too_many_conversations")


def too_large(limit_mb: float) -> ApiError:
    return ApiError(413, f"Saved conversations may take at most {limit_mb:g} MiB together (MAX_CONVERSATIONS_MB); "
                         "delete some (or their images) first.", code="storage_limit")


def check_room(s: Settings, count: int, total: int, new: int, old: int = 0, adding: bool = False) -> None:
    """Refuse a write that would pass MAX_CONVERSATIONS or MAX_CONVERSATIONS_MB (`count` conversations taking
    `total` bytes now; the write adds one when `adding`, and replaces `old` bytes with `new`)."""
    if adding and count >= s.MAX_CONVERSATIONS:
        raise too_many(s.MAX_CONVERSATIONS)
    if new > old and total - old + new > s.MAX_CONVERSATIONS_MB * 1024 * 1024:
        raise too_large(s.MAX_CONVERSATIONS_MB)


def whole(row: tuple) -> dict[str, Any]:
    """(id, title, model, params, messages, created_at, updated_at) as stored → the conversation."""
    cid, title, model, params, messages, created, updated = row
    return {"id": cid, "title": title, "model": model, "params": ujson.loads(params),
            "messages": ujson.loads(messages), "created_at": created, "updated_at": updated}


def summary(row: tuple) -> dict[str, Any]:
    """(id, title, model, created_at, updated_at, message count) → one line of the listing."""
    return {"id": row[0], "title": row[1], "model": row[2], "created_at": row[3], "updated_at": row[4],
            "message_count": row[5]}


LIST_LIMIT = 500  # conversations a listing (or a search) returns, most recently changed first


class ConversationStore(abc.ABC):
    """What every store of conversations shares: validation, titles, the caps' arithmetic, export and import.
    A store (SQLite: `Conversations`; Redis: server/store/redis_conversations.py) only reads and writes rows,
    so both behave alike whatever a client sends."""

    def __init__(self, clock: Clock, settings: Callable[[], Settings]):
        self.clock = clock
        self.settings = settings

    # -- what a store provides -------------------------------------------------------------------------

    @abc.abstractmethod
    async def load(self) -> None:
        """Read what the store keeps in memory (at start)."""

    @abc.abstractmethod
    async def list(self, query: str = "") -> list[dict[str, Any]]:
        """Summaries, most recently changed first (at most LIST_LIMIT); `query`: only those whose title or
        messages contain it, ignoring case."""

    @abc.abstractmethod
    async def get(self, cid: str) -> dict[str, Any]:
        """The whole conversation; 404 when there is none."""

    @abc.abstractmethod
    async def delete(self, cid: str) -> None:
        """Remove it; 404 when there is none."""

    @abc.abstractmethod
    async def _insert(self, cid: str, model: str | None, row: tuple[str, str, str, str, int], now: float) -> None:
        """Store a new conversation (`row` from `_stored`), within the caps (check_room) or raising."""

    @abc.abstractmethod
    async def _replace(self, cid: str, model: str | None, row: tuple[str, str, str, str, int], now: float) -> None:
        """Replace a stored conversation (404 if it is gone), within the caps (check_room) or raising."""

    # -- shared --------------------------------------------------------------------------------------

    async def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        messages = _messages(body.get("messages"))
        params = _params(body.get("params"))
        title = _title(body.get("title"), messages)
        model = _model(body.get("model"))
        cid = secrets.token_hex(8)
        await self._insert(cid, model, _stored(title, params, messages), self.clock.time())
        return await self.get(cid)

    async def update(self, cid: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        current = await self.get(cid)
        messages = _messages(body["messages"]) if "messages" in body else current["messages"]
        params = _params(body["params"]) if "params" in body else current["params"]
        model = _model(body["model"]) if "model" in body else current["model"]
        title = _title(body["title"], messages) if "title" in body else current["title"]
        if title == "New conversation" and "title" not in body:
            title = _title(None, messages)
        await self._replace(cid, model, _stored(title, params, messages), self.clock.time())
        return await self.get(cid)

    async def export_json(self, cid: str) -> dict[str, Any]:
        c = await self.get(cid)
        return {"format": EXPORT_FORMAT, "title": c["title"], "model": c["model"], "params": c["params"],
                "messages": c["messages"], "created_at": c["created_at"]}

    async def export_markdown(self, cid: str) -> str:
        c = await self.get(cid)
        lines = [f"# {c['title']}", ""]
        if c["model"]:
            lines += [f"Model: `{c['model']}`", ""]
        if c["params"].get("system"):
            lines += ["## System", "", c["params"]["system"], ""]
        for m in c["messages"]:
            lines += [f"## {m['role'].capitalize()}", ""]
            if m.get("reasoning"):
                lines += ["<details><summary>Reasoning</summary>", "", m["reasoning"], "", "</details>", ""]
            lines += [m["content"], ""]
            if m.get("images"):
                lines += [f"*({len(m['images'])} image(s) attached)*", ""]
        return "\n".join(lines)

    async def import_json(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("format") != EXPORT_FORMAT:
            raise bad_request(f"not a conversation export (expected \"format\": \"{EXPORT_FORMAT}\")", "format")
        return await self.create({k: body.get(k) for k in ("title", "model", "params", "messages")})


class Conversations(ConversationStore):
    """Saved conversations in SQLite; whoever holds the client password can write them, so their number and
    their bytes are capped (MAX_CONVERSATIONS, MAX_CONVERSATIONS_MB), counted in memory from one query at start
    (one process owns the file)."""

    def __init__(self, db: Database, clock: Clock, settings: Callable[[], Settings]):
        super().__init__(clock, settings)
        self.db = db
        self.count = 0
        self.bytes = 0

    async def load(self) -> None:
        (count, total), = await self.db.fetchall("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM conversation")
        self.count, self.bytes = int(count), int(total)

    async def list(self, query: str = "") -> list[dict[str, Any]]:
        sql = "SELECT id, title, model, created_at, updated_at, json_array_length(messages) FROM conversation"
        args: tuple = ()
        if query.strip():
            sql += " WHERE instr(search_text, ?) > 0"
            args = (query.strip().lower(),)
        rows = await self.db.fetchall(sql + f" ORDER BY updated_at DESC LIMIT {LIST_LIMIT}", args)
        return [summary(r) for r in rows]

    async def get(self, cid: str) -> dict[str, Any]:
        rows = await self.db.fetchall("SELECT id, title, model, params, messages, created_at, updated_at "
                                      "FROM conversation WHERE id = ?", (cid,))
        if not rows:
            raise not_found(cid)
        return whole(rows[0])

    async def _insert(self, cid: str, model: str | None, row: tuple[str, str, str, str, int], now: float) -> None:
        check_room(self.settings(), self.count, self.bytes, row[-1], adding=True)
        await self.db.write([("INSERT INTO conversation (id, title, model, params, messages, search_text, bytes, "
                              "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              [(cid, row[0], model, *row[1:], now, now)])])
        self.count += 1
        self.bytes += row[-1]

    async def _replace(self, cid: str, model: str | None, row: tuple[str, str, str, str, int], now: float) -> None:
        old = await self._bytes(cid)
        check_room(self.settings(), self.count, self.bytes, row[-1], old)
        await self.db.write([("UPDATE conversation SET title = ?, model = ?, params = ?, messages = ?, "
                              "search_text = ?, bytes = ?, updated_at = ? WHERE id = ?",
                              [(row[0], model, *row[1:], now, cid)])])
        self.bytes += row[-1] - old

    async def _bytes(self, cid: str) -> int:
        rows = await self.db.fetchall("SELECT bytes FROM conversation WHERE id = ?", (cid,))
        if not rows:
            raise not_found(cid)
        return int(rows[0][0])

    async def delete(self, cid: str) -> None:
        old = await self._bytes(cid)
        await self.db.write([("DELETE FROM conversation WHERE id = ?", [(cid,)])])
        self.count -= 1
        self.bytes -= old
