"""Live settings: values changed on the dashboard, kept in SQLite (or Redis, shared), in force over the environment.

The settings in force are always `base` (environment and defaults, read at start) with the
saved overrides on top. Each override remembers what the environment said when it was made,
so when a redeploy changes that variable the page says so (and start-up logs it) instead of
the old saved value masking the new one without a word (hajimi issue #282).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..auth import ADMIN_PASSWORD_FILE, PASSWORD_FILE
from ..errors import ApiError
from ..settings import Settings, format_value, parse_value
from ..store.db import Database

log = logging.getLogger("keyloom.settings")


@dataclass
class Override:
    value: str        # as text, parsed like the environment variable would be
    env_value: str    # what the environment (or default) said when the change was made
    env_source: str
    changed_at: float


Row = tuple[str, str, str, str, float]  # name, value, env_value, env_source, changed_at


class SettingsOverrides:
    """What every store of live settings shares: validation, the settings in force, the description the page
    shows. Where the overrides are kept is the subclass's: `LiveSettings` (SQLite) or
    `server.store.redis_settings.RedisLiveSettings` (shared by replicas)."""

    def __init__(self, base: Settings, data_dir: Path | None = None):
        self.base = base
        self.data_dir = data_dir
        self.overrides: dict[str, Override] = {}

    async def _stored(self) -> list[Row]:
        raise NotImplementedError

    async def _put(self, rows: list[Row]) -> None:
        raise NotImplementedError

    async def _drop(self, names: list[str]) -> None:
        raise NotImplementedError

    def live_names(self) -> list[str]:
        return [n for n, s in self.base.specs.items() if s.live]

    def env_text(self, name: str) -> str:
        return format_value(self.base.specs[name], self.base.values[name])

    async def load(self) -> Settings:
        self.overrides = self._read(await self._stored(), quiet=False)
        return self.effective()

    def _read(self, rows: list[Row], quiet: bool) -> dict[str, Override]:
        """Saved rows → overrides; a value that is no longer valid is skipped (logged unless `quiet`)."""
        found: dict[str, Override] = {}
        for name, value, env_value, env_source, changed_at in rows:
            spec = self.base.specs.get(name)
            if spec is None or not spec.live:
                if not quiet:
                    log.warning("ignoring a saved value for %s: it is not a setting that can be changed live", name)
                continue
            try:
                parse_value(spec, value)
            except ValueError as e:
                if not quiet:
                    log.warning("ignoring the saved value of %s: %s", name, e)
                continue
            o = found[name] = Override(value, env_value, env_source, changed_at)
            if not quiet and (o.env_value != self.env_text(name) or o.env_source != self.base.sources[name]):
                shown = "(hidden)" if spec.secret else f"{self.env_text(name)!r}"
                log.warning("%s: the value saved on the dashboard (%r) is in force; the environment now says %s "
                            "(it said %r when the value was saved). Use 'reset to environment' on the dashboard "
                            "to follow the environment.", name, o.value, shown, o.env_value)
        return found

    def env_changed(self, name: str) -> bool:
        o = self.overrides.get(name)
        return o is not None and (o.env_value != self.env_text(name) or o.env_source != self.base.sources[name])

    def effective(self) -> Settings:
        changes = {n: parse_value(self.base.specs[n], o.value) for n, o in self.overrides.items()}
        return self.base.replace("dashboard", **changes) if changes else self.base

    def check(self, changes: Any) -> dict[str, str]:
        """Validate {name: value} from the admin API; → {name: value as text}. Raises a 400 naming every problem."""
        if not isinstance(changes, dict) or not changes:
            raise ApiError(400, "Send a JSON object of settings to change, e.g. {\"FAKE_STREAMING\": false}.")
        problems, out = [], {}
        for name, raw in changes.items():
            spec = self.base.specs.get(name)
            if spec is None:
                problems.append(f"{name}: no such setting")
                continue
            if not spec.live:
                problems.append(f"{name}: cannot be changed while Keyloom runs; set it in the environment")
                continue
            if isinstance(raw, bool):
                text = "true" if raw else "false"
            elif isinstance(raw, (int, float)):
                text = repr(raw)
            elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
                text = ", ".join(raw)
            elif isinstance(raw, str):
                text = raw
            else:
                problems.append(f"{name}: expected a string, number or boolean")
                continue
            if len(text) > 20_000:
                problems.append(f"{name}: value too long")
                continue
            try:
                out[name] = format_value(spec, parse_value(spec, text))
            except ValueError as e:
                problems.append(f"{name}: {e}")
        if problems:
            raise ApiError(400, "; ".join(problems), param=next(iter(changes)) if len(changes) == 1 else None)
        return out

    async def save(self, changes: dict[str, str], now: float) -> Settings:
        rows: list[Row] = []
        for name, value in changes.items():
            o = Override(value, self.env_text(name), self.base.sources[name], now)
            rows.append((name, o.value, o.env_value, o.env_source, now))
        await self._put(rows)
        for name, value, env_value, env_source, changed_at in rows:
            self.overrides[name] = Override(value, env_value, env_source, changed_at)
        return self.effective()

    async def reset(self, names: list[str]) -> Settings:
        await self._drop(names)
        for n in names:
            self.overrides.pop(n, None)
        return self.effective()

    def describe(self, current: Settings, data_dir: Path | None = None) -> list[dict[str, Any]]:
        """Every setting: value in force (secrets masked), where it came from, and why. `data_dir`: the DATA_DIR
        resolved at start (default: the one this store was given)."""
        data_dir = (self.data_dir or Path(".")) if data_dir is None else data_dir
        out = []
        for name, spec in self.base.specs.items():
            value = current.values[name]
            o = self.overrides.get(name)
            secret = spec.secret
            item: dict[str, Any] = {
                "name": name, "type": spec.type, "live": spec.live, "secret": secret,
                "value": ("(set)" if value else "") if secret else format_value(spec, value),
                "source": current.sources.get(name, "default"),
                "environment": ("(set)" if self.base.values[name] else "") if secret else self.env_text(name),
                "environment_source": self.base.sources.get(name, "default"),
                "help": spec.help, "help_zh": spec.help_zh,
            }
            if spec.choices:
                item["choices"] = list(spec.choices)
            if spec.min is not None:
                item["min"] = spec.min
            if spec.max is not None:
                item["max"] = spec.max
            if o is not None:
                item["changed_at"] = o.changed_at
                item["environment_when_changed"] = o.env_value
                item["environment_changed_since"] = self.env_changed(name)
            item.update(_in_force(name, current, data_dir))
            out.append(item)
        return out


class LiveSettings(SettingsOverrides):
    """Live settings kept in SQLite (table setting_override)."""

    def __init__(self, base: Settings, db: Database):
        super().__init__(base, db.path.parent)  # the database lives in DATA_DIR
        self.db = db

    async def _stored(self) -> list[Row]:
        return [(name, value, env_value, env_source, changed_at)
                for name, value, env_value, env_source, changed_at in await self.db.fetchall(
                    "SELECT name, value, env_value, env_source, changed_at FROM setting_override")]

    async def _put(self, rows: list[Row]) -> None:
        await self.db.write([("INSERT OR REPLACE INTO setting_override (name, value, env_value, env_source, "
                              "changed_at) VALUES (?, ?, ?, ?, ?)", rows)])

    async def _drop(self, names: list[str]) -> None:
        await self.db.write([("DELETE FROM setting_override WHERE name = ?", [(n,) for n in names])])


def _in_force(name: str, current: Settings, data_dir: Path) -> dict[str, Any]:
    """What is in force where the setting is empty: the password generated into DATA_DIR (never its value),
    the admin password taken from its alias WEB_PASSWORD, DATA_DIR as resolved at start. {} elsewhere."""
    v = current.values
    if name == "PASSWORD" and not v["PASSWORD"]:
        kept = str(data_dir / PASSWORD_FILE)
        return {"value": f"(generated, kept in {kept})", "source": "generated", "kept_in": kept}
    if name == "ADMIN_PASSWORD" and not v["ADMIN_PASSWORD"]:
        if v["WEB_PASSWORD"]:
            return {"value": "(set, from WEB_PASSWORD)", "source": current.sources.get("WEB_PASSWORD", "default"),
                    "from": "WEB_PASSWORD"}
        kept = str(data_dir / ADMIN_PASSWORD_FILE)
        return {"value": f"(generated, kept in {kept})", "source": "generated", "kept_in": kept}
    if name == "DATA_DIR" and not v["DATA_DIR"]:
        return {"value": str(data_dir), "resolved": True}
    return {}
