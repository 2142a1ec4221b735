"""The owner's side of client keys: `<dashboard>/api/client-keys[/<id>]` (list, create, change, remove).

Admin API handlers (the admin password or a dashboard session with its CSRF token; never a client key or the
client password). A new key is in the answer to its creation and nowhere else, ever: Keyloom keeps its hash.
Every change goes to the audit trail, naming the key by its name and first characters.
"""
from __future__ import annotations

from ..client_keys import ClientKey
from .admin import AdminApiHandler
from .base import BaseHandler


def _target(ck: ClientKey) -> str:
    return f"{ck.name} ({ck.prefix}…)"


class ClientKeysHandler(AdminApiHandler):
    async def get(self) -> None:
        self.write_json({"client_keys": await self.kl.client_keys.listing()})

    async def post(self) -> None:
        keys = self.kl.client_keys
        ck, key = await keys.create(self.body())
        await self.kl.audit.record("client_key_created", ip=self.actor.ip, via=self.actor.via, target=_target(ck))
        entry = next(e for e in await keys.listing() if e["id"] == ck.id)
        self.write_json({**entry, "key": key}, 201)


class ClientKeyHandler(AdminApiHandler):
    async def put(self, key_id: str) -> None:
        keys = self.kl.client_keys
        ck = await keys.update(key_id, self.body())
        await self.kl.audit.record("client_key_changed", ip=self.actor.ip, via=self.actor.via, target=_target(ck))
        self.write_json(next(e for e in await keys.listing() if e["id"] == ck.id))

    async def delete(self, key_id: str) -> None:
        keys = self.kl.client_keys
        ck = keys.entry(key_id)
        await keys.delete(key_id)
        await self.kl.audit.record("client_key_removed", ip=self.actor.ip, via=self.actor.via, target=_target(ck))
        self.write_json({"deleted": True})


def client_key_routes(api: str) -> list[tuple[str, type[BaseHandler]]]:
    return [(api + "/client-keys", ClientKeysHandler), (api + r"/client-keys/([A-Za-z0-9\-]{1,40})", ClientKeyHandler)]
