"""Live settings shared by every replica through Redis (REDIS_URL set).

Why: a setting changed on the dashboard of one replica must be in force on all of them, or a cluster behind a
load balancer answers by whichever rules the replica that got the request last heard of. The replica that
changes a setting writes it to Redis and publishes a notice; every other replica reads the overrides again
and puts them in force through `on_change` (the same path a change on its own dashboard takes:
`Keyloom.apply_settings`). A replica cut off from Redis reads them again when it is back.

Each replica compares an override with its own environment (`env_changed`), so a replica redeployed with a
new value still says "the environment now says …" on its page.

Redis key (p = REDIS_PREFIX): `p settings` hash, setting name → JSON [value, env_value, env_source, changed_at].
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ujson

from ..admin.overrides import Row, SettingsOverrides
from ..settings import Settings
from .redis_backend import RedisBackend

KIND = "settings"


class RedisLiveSettings(SettingsOverrides):
    def __init__(self, base: Settings, backend: RedisBackend, data_dir: Path,
                 on_change: Callable[[Settings], None]):
        """`on_change(settings in force)`: called when another replica changed or reset a setting."""
        super().__init__(base, data_dir)
        self.backend = backend
        self.name = backend.key("settings")
        self.on_change = on_change
        backend.subscribe(KIND, self._changed_elsewhere)
        backend.on_return(self._changed_elsewhere)

    async def _stored(self) -> list[Row]:
        async def read() -> Any:
            return await self.backend.client.hgetall(self.name)

        rows: list[Row] = []
        for name, raw in (await self.backend.call("reading the settings", read)).items():
            try:
                value, env_value, env_source, changed_at = ujson.loads(raw)
                rows.append((name.decode("utf-8"), str(value), str(env_value), str(env_source), float(changed_at)))
            except (ValueError, TypeError, UnicodeDecodeError):
                continue  # not ours, or damaged: the environment's value stays in force
        return rows

    async def _put(self, rows: list[Row]) -> None:
        mapping: dict[Any, Any] = {name: ujson.dumps([value, env_value, env_source, changed_at], ensure_ascii=False)
                   for name, value, env_value, env_source, changed_at in rows}
        await self.backend.call("saving the settings", lambda: self.backend.client.hset(self.name, mapping=mapping))
        self.backend.publish(KIND)

    async def _drop(self, names: list[str]) -> None:
        if not names:
            return
        await self.backend.call("resetting the settings", lambda: self.backend.client.hdel(self.name, *names))
        self.backend.publish(KIND)

    async def _changed_elsewhere(self, _data: Any = None) -> None:
        """Read every override again and put the result in force (quietly: start-up already said what the
        environment disagrees with)."""
        self.overrides = self._read(await self._stored(), quiet=True)
        self.on_change(self.effective())
