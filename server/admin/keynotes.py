"""Key management beyond add/remove: a note and tags per key, taking a key out of rotation by hand, removing
every key Google called invalid at once, and a key's last 30 days.

Why a separate table (key_note, migration 0009; `p keynote` in Redis) rather than more columns on key_state:
key_state is the pool's own, rewritten by every flush from memory; what the owner writes by hand must not
depend on the request path's bookkeeping. The disabling itself still goes through the pool (`KeyPool.disable`), so the
request path, the flusher and a restart treat it like any other disabled key; key_note only remembers that it
was by hand (see `hand_disabled`). Everything that changes something is written to the audit trail.

Nothing here holds state between calls: the handlers build one per request; what it keeps goes through the
admin service's key store (server/admin/keystore.py: SQLite, or Redis shared by replicas).
"""
from __future__ import annotations

import unicodedata
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ApiError
from ..pool.keys import Key
from ..store.history import History
from .keystore import NoteRow
from .service import Actor

if TYPE_CHECKING:
    from ..app import Keyloom

MAX_TAGS = 8        # a few labels per key ("team-a", "paid", "backup"); more is a database, not a tag
MAX_TAG_LEN = 32
MAX_NOTE_LEN = 500
HISTORY_DAYS = 30
HAND_PREFIX = "Disabled by hand"
INVALID_KIND = "InvalidKey"  # the failure kind Google's API_KEY_INVALID becomes (server/upstream/failures.py)


def clean_text(value: str) -> str:
    """One line of printable text: control characters (newlines in a tag, escape sequences) dropped."""
    return "".join(c for c in value if unicodedata.category(c)[0] != "C").strip()


def check_tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ApiError(400, "\"tags\" must be a list of strings.", param="tags")
    tags: list[str] = []
    seen: set[str] = set()
    for raw in value:
        tag = " ".join(clean_text(raw).split())
        if not tag:
            continue
        if len(tag) > MAX_TAG_LEN:
            raise ApiError(400, f"A tag is at most {MAX_TAG_LEN} characters: {tag[:MAX_TAG_LEN]!r}….", param="tags")
        if tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ApiError(400, f"At most {MAX_TAGS} tags per key.", param="tags")
    return tags


def check_note(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "\"note\" must be a string.", param="note")
    note = "".join(c for c in value if c in "\n\t" or unicodedata.category(c)[0] != "C").strip()
    if len(note) > MAX_NOTE_LEN:
        raise ApiError(400, f"A note is at most {MAX_NOTE_LEN} characters.", param="note")
    return note


def hand_disabled(key: Key, disabled_by_hand_at: float | None) -> bool:
    """Out of rotation because the owner said so: the disabling recorded by hand is the one in force."""
    return (key.disabled_reason is not None and disabled_by_hand_at is not None
            and key.disabled_at == disabled_by_hand_at)


def invalid(key: Key) -> bool:
    """Disabled because Google answered API_KEY_INVALID for it (a Gemini API key, not a service account)."""
    return key.provider == "gemini" and (key.disabled_reason or "").startswith(INVALID_KIND + ":")


class KeyNotes:
    def __init__(self, kl: Keyloom, history: History | None = None):
        self.kl = kl
        self.audit = kl.audit
        self.past: History = history if history is not None else kl.history  # where `history()` reads usage

    def key(self, fp: str) -> Key:
        return self.kl.admin.key(fp)  # 404 when the pool has no such key

    async def _rows(self, fps: list[str] | None = None) -> dict[str, NoteRow]:
        return await self.kl.admin.keys.notes(fps)

    def _view(self, key: Key, row: NoteRow | None) -> dict[str, Any]:
        note, tags, at, updated = row if row else ("", [], None, None)
        return {"fp": key.fp, "key": key.masked, "note": note, "tags": tags,
                "disabled_by_hand": hand_disabled(key, at), "invalid": invalid(key), "updated_at": updated}

    async def all(self) -> dict[str, Any]:
        """Notes and tags of every key in the pool, the tags in use, and the keys Google called invalid."""
        rows = await self._rows()
        keys = {k.fp: self._view(k, rows.get(k.fp)) for k in self.kl.pool.keys}
        tags = sorted({t for v in keys.values() for t in v["tags"]}, key=str.casefold)
        return {"keys": keys, "tags": tags, "invalid": [fp for fp, v in keys.items() if v["invalid"]]}

    async def _save(self, fp: str, note: str, tags: list[str], at: float | None) -> None:
        await self.kl.admin.keys.save_note(fp, note, tags, at, self.kl.clock.time())

    async def change(self, actor: Actor, fp: str, body: dict[str, Any]) -> dict[str, Any]:
        """Set the note and/or the tags (what is not sent stays as it was)."""
        key = self.key(fp)
        if "note" not in body and "tags" not in body:
            raise ApiError(400, "Send {\"note\": \"…\"} and/or {\"tags\": [\"…\"]}.")
        rows = await self._rows([fp])
        note, tags, at, _ = rows.get(fp, ("", [], None, 0.0))
        redact = self.kl.redactor
        new_note = redact(check_note(body["note"])) if "note" in body else note
        new_tags = [redact(t) for t in check_tags(body["tags"])] if "tags" in body else tags
        await self._save(fp, new_note, new_tags, at)
        changed = []
        if new_tags != tags:
            changed.append("tags: " + (", ".join(new_tags) or "(none)"))
        if new_note != note:
            changed.append("note: " + (new_note or "(none)"))
        if changed:
            await self.audit.record("key_note_changed", ip=actor.ip, via=actor.via, target=key.masked,
                                    detail="; ".join(changed))
        return self._view(key, (new_note, new_tags, at, self.kl.clock.time()))

    async def disable(self, actor: Actor, fp: str, note: Any) -> dict[str, Any]:
        """Out of rotation by hand, with a note saying why; back with POST …/enable (the pool's own action)."""
        key = self.key(fp)
        text = self.kl.redactor(" ".join(check_note(note).split()))
        rows = await self._rows([fp])
        old_note, tags, at, _ = rows.get(fp, ("", [], None, 0.0))
        if key.disabled_reason is not None and not hand_disabled(key, at):
            raise ApiError(409, f"{key.masked} is already out of rotation: {self.kl.redactor(key.disabled_reason)}",
                           code="key_already_disabled")
        pool = self.kl.pool
        if key.disabled_reason is not None:
            pool.enable(key)  # a new note on a key already disabled by hand: disabled again, from now
        pool.disable(key, f"{HAND_PREFIX}: {text}" if text else HAND_PREFIX)
        await self.kl.flusher.flush()  # key_state now, so a crash cannot keep the note without the disabling
        await self._save(fp, text or old_note, tags, key.disabled_at)
        await self.audit.record("key_disabled", ip=actor.ip, via=actor.via, target=key.masked,
                                detail=text or "no note")
        return {"disabled": self._view(key, (text or old_note, tags, key.disabled_at, self.kl.clock.time()))}

    async def remove_invalid(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        """Every key Google called invalid, out of the pool and the database in one go. Asks for
        {"confirm": true}; with "fps", only those of them (what the page showed when the owner confirmed)."""
        if body.get("confirm") is not True:
            raise ApiError(400, "This removes keys: send {\"confirm\": true}.", param="confirm")
        fps = body.get("fps")
        if fps is not None and not (isinstance(fps, list) and all(isinstance(f, str) for f in fps)):
            raise ApiError(400, "\"fps\" must be a list of fingerprints.", param="fps")
        kl = self.kl
        keys = [k for k in kl.pool.keys if invalid(k) and (fps is None or k.fp in fps)]
        if not keys:
            return {"removed": [], "count": 0}
        # notes go with the keys; a key from the environment stays out after a restart, as with a single removal
        await kl.admin.keys.remove([k.fp for k in keys], [k.fp for k in keys if k.source != "dashboard"],
                                   kl.clock.time())
        for k in keys:
            kl.pool.remove(k.fp)
        await self.audit.record("invalid_keys_removed", ip=actor.ip, via=actor.via,
                                target=", ".join(k.masked for k in keys[:50]) + (" …" if len(keys) > 50 else ""),
                                detail=f"{len(keys)} keys Google called invalid")
        return {"removed": [{"fp": k.fp, "key": k.masked, "source": k.source} for k in keys], "count": len(keys)}

    async def history(self, fp: str) -> dict[str, Any]:
        """Requests and tokens per quota day, the last 30 days (oldest first, days without traffic as 0)."""
        key = self.key(fp)
        kl = self.kl
        await kl.admin._fresh()
        today = date.fromisoformat(kl.pool.check_day())
        days = [(today - timedelta(days=HISTORY_DAYS - 1 - i)).isoformat() for i in range(HISTORY_DAYS)]
        rows = await self.past.key_days(fp, days)
        out = []
        for d in days:
            r, s, f, t = rows.get(d, (0, 0, 0, 0))
            out.append({"day": d, "requests": r, "successes": s, "failures": f, "tokens": t})
        return {"fp": fp, "key": key.masked, "quota_tz": str(kl.pool.quota_day.zone), "days": out}
