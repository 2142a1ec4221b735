"""Admin API for key management beyond add/remove (server/admin/keynotes.py): notes and tags, disabling by hand,
removing the keys Google called invalid, a key's last 30 days.

Same doors as every admin route (AdminApiHandler: session cookie + CSRF token or the bearer password,
application/json, the admin body cap); mounted by one line in `admin_routes` (server/handlers/admin.py).
Re-enabling stays the pool's own action, POST <api>/keys/<fp>/enable.
"""
from __future__ import annotations

from ..admin.keynotes import KeyNotes
from .admin import AdminApiHandler
from .base import BaseHandler

FP = "([0-9a-f]{12})"


class _KeyNotesHandler(AdminApiHandler):
    @property
    def notes(self) -> KeyNotes:
        return KeyNotes(self.kl)


class KeyMetaListHandler(_KeyNotesHandler):
    async def get(self) -> None:
        """Notes and tags of every key, the tags in use, the fingerprints of the keys Google called invalid."""
        self.write_json(await self.notes.all())


class KeyMetaHandler(_KeyNotesHandler):
    async def put(self, fp: str) -> None:
        self.write_json(await self.notes.change(self.actor, fp, self.body()))


class KeyDisableHandler(_KeyNotesHandler):
    async def post(self, fp: str) -> None:
        self.write_json(await self.notes.disable(self.actor, fp, self.body().get("note")))


class RemoveInvalidHandler(_KeyNotesHandler):
    async def post(self) -> None:
        self.write_json(await self.notes.remove_invalid(self.actor, self.body()))


class KeyHistoryHandler(_KeyNotesHandler):
    async def get(self, fp: str) -> None:
        self.write_json(await self.notes.history(fp))


def key_management_routes(api: str) -> list[tuple[str, type[BaseHandler]]]:
    """Routes under the dashboard's API base `api` (e.g. '/api')."""
    return [
        (api + "/keys/meta", KeyMetaListHandler),
        (api + "/keys/remove-invalid", RemoveInvalidHandler),
        (api + f"/keys/{FP}/meta", KeyMetaHandler),
        (api + f"/keys/{FP}/disable", KeyDisableHandler),
        (api + f"/keys/{FP}/history", KeyHistoryHandler),
    ]
