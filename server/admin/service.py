"""The admin service: everything the dashboard and the admin API can do, in one place.

Handlers authenticate, parse and call one method here; each action that changes something
is written to the audit table. Reads flush the in-memory counters first, so the page shows
the request that finished a moment ago (a flush is one small transaction, off the request path).
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ApiError
from ..keyshapes import looks_like_gemini_key, split_keys, valid_key_text
from ..limits import client_key
from ..pool.keys import Key
from ..providers.vertex import HANDLE
from ..redact import fingerprint, mask
from ..settings import Settings
from ..store.errors import StoreDown
from ..store.redis_backend import StoreUnavailable
from .keystore import KeyStore, SqliteKeyStore
from .keytest import KeyTests, TestJob
from .overrides import LiveSettings, SettingsOverrides
from .sessions import Sessions, SignedSessions
from .stats import STATUS_FILTERS, Stats

if TYPE_CHECKING:
    from ..app import Keyloom

log = logging.getLogger("keyloom.admin")
MAX_KEYS_PER_ADD = 10_000


@dataclass(frozen=True)
class Actor:
    """Who acts: the client IP and how they signed in (session or bearer)."""

    ip: str
    via: str


def wrong_password() -> ApiError:
    return ApiError(401, "Wrong password.", code="invalid_password")


class AdminService:
    def __init__(self, kl: Keyloom, base: Settings, *, live: SettingsOverrides | None = None,
                 sessions: SignedSessions | None = None, keys: KeyStore | None = None):
        """`live`, `sessions`, `keys`: where the dashboard keeps its state (default: SQLite in DATA_DIR; the
        Redis twins in server/store/redis_*.py when REDIS_URL is set)."""
        self.kl = kl
        self.live = live if live is not None else LiveSettings(base, kl.db)
        self.sessions = sessions if sessions is not None else Sessions(
            kl.db, kl.clock, lambda: kl.admin_password, lambda: kl.settings.ADMIN_SESSION_HOURS)
        self.keys = keys if keys is not None else SqliteKeyStore(kl.db)
        self.keys.watch(self.sync_keys)
        self.throttle = kl.throttle
        self.audit = kl.audit
        self.stats = Stats(kl, kl.history)
        self.tests = KeyTests(kl.pool, kl.client_for, kl.redactor)
        self.tests.on_done = self._tested

    async def load(self) -> Settings:
        """At start-up, before the counters are read back: keys added or removed here, saved settings,
        sessions. Returns the settings in force."""
        await self.sync_keys(start=True)
        await self.sessions.load()
        return await self.live.load()

    async def sync_keys(self, start: bool = False) -> None:
        """Bring the pool in line with the keys added and removed on the dashboard: at start, and (Redis mode)
        when another replica changed them (a key added there joins, a key removed there leaves)."""
        kl = self.kl
        for fp in await self.keys.removed():
            kl.pool.remove(fp)
        stored = await self.keys.stored()
        kl.redactor.add(stored)
        for secret in stored:
            kl.pool.add(secret, source="dashboard")
        if not start:
            kept = {fingerprint(s) for s in stored}
            for key in [k for k in kl.pool.keys if k.source == "dashboard" and k.fp not in kept]:
                kl.pool.remove(key.fp)

    # -- passwords -------------------------------------------------------------------------------

    def check_password(self, ip: str, candidate: Any, password: str | None = None) -> None:
        """Raises 429 while the client is throttled, 401 on a wrong password (and counts it). `password`: the
        one expected (default the admin password; the chat playground checks PASSWORD); the throttle is the
        one every door shares."""
        expected = self.kl.admin_password if password is None else password
        client = client_key(ip)
        refused = self.kl.gate.check(client, [candidate] if isinstance(candidate, str) else [], expected,
                                     wrong_password)
        if refused is not None:
            raise refused
        self.throttle.succeeded(client)

    async def login(self, ip: str, password: Any) -> tuple[str, dict[str, Any]]:
        try:
            self.check_password(ip, password)
        except ApiError as e:
            if e.status == 401:
                self.audit.refused("login_failed", ip=ip, via="session")
            raise
        cookie, s = await self.sessions.create(ip)
        await self.audit.record("login", ip=ip, via="session")
        return cookie, {"csrf": s.csrf, "expires_at": s.expires_at}

    # -- reads -----------------------------------------------------------------------------------

    async def _fresh(self) -> None:
        """Flush before a read, so the page includes the last second. A flush the disk refuses (full) is
        logged and retried by the timer; the read goes on with what is stored."""
        try:
            await self.kl.flusher.flush()
        except sqlite3.Error as e:
            log.warning("could not write counters before a dashboard read: %s", e)
        except StoreDown:
            raise StoreUnavailable("reading the cluster's figures") from None

    async def status(self) -> dict[str, Any]:
        await self._fresh()
        return {"service": await self.stats.service(), "keys": self.stats.keys(), "proxies": self.stats.proxies()}

    async def charts(self) -> dict[str, Any]:
        await self._fresh()
        return await self.stats.charts()

    async def requests(self, status: str | None) -> dict[str, Any]:
        if status and status not in STATUS_FILTERS and not (status.isdigit() and 100 <= int(status) <= 599):
            raise ApiError(400, f"Unknown status filter {status!r}: use ok, error, 4xx, 5xx, 429 or a status code.",
                           param="status")
        await self._fresh()
        return {"requests": await self.stats.requests(status or None)}

    def settings(self) -> dict[str, Any]:
        return {"settings": self.live.describe(self.kl.settings)}

    # -- keys ------------------------------------------------------------------------------------

    def key(self, fp: str) -> Key:
        key = self.kl.pool.get(fp)
        if key is None:
            raise ApiError(404, f"No key with fingerprint {fp!r}.", code="key_not_found")
        return key

    async def add_keys(self, actor: Actor, text: Any) -> dict[str, Any]:
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Send {\"keys\": \"…\"}: one or more keys, separated by anything.", param="keys")
        kl = self.kl
        refused = self.keys.refuse_adding()
        if refused is not None:
            raise refused
        strict = not kl.demo
        added: list[Key] = []
        new: list[tuple[str, str]] = []
        duplicates: list[str] = []
        malformed: list[str] = []
        seen: set[str] = set()
        items = split_keys(text, unique=False)
        if len(items) > MAX_KEYS_PER_ADD:
            raise ApiError(400, f"At most {MAX_KEYS_PER_ADD} keys at a time.", param="keys")
        for item in items:
            if not valid_key_text(item) or (strict and not looks_like_gemini_key(item)):
                malformed.append(mask(item))
                continue
            fp = fingerprint(item)
            if fp in seen or kl.pool.get(fp) is not None:
                duplicates.append(mask(item))
                continue
            seen.add(fp)
            kl.redactor.add([item])
            new.append((fp, item))
        if new:  # stored first: a key the store refused (Redis away) does not serve here only
            await self.keys.add(new, kl.clock.time())
        for _, item in new:
            key = kl.pool.add(item, source="dashboard")
            if key is not None:
                added.append(key)
        if added:
            await self.audit.record("keys_added", ip=actor.ip, via=actor.via, target=", ".join(k.masked for k in added),
                                    detail=f"{len(added)} added, {len(duplicates)} duplicate, "
                                           f"{len(malformed)} malformed")
        return {"added": [{"fp": k.fp, "key": k.masked} for k in added], "duplicates": duplicates,
                "malformed": malformed, "stored_in_database": bool(added)}

    async def remove_key(self, actor: Actor, fp: str) -> dict[str, Any]:
        kl = self.kl
        key = self.key(fp)
        # its note and tags go with it (a key added again starts without them); a key from the environment
        # is remembered as removed, so it stays out after a restart
        await self.keys.remove([fp], [fp] if key.source != "dashboard" else [], kl.clock.time())
        kl.pool.remove(fp)
        await self.audit.record("key_removed", ip=actor.ip, via=actor.via, target=key.masked,
                                detail=f"from {key.source}")
        return {"removed": {"fp": fp, "key": key.masked, "source": key.source}}

    async def enable_key(self, actor: Actor, fp: str) -> dict[str, Any]:
        key = self.key(fp)
        was = key.disabled_reason
        self.kl.pool.enable(key)
        await self.audit.record("key_enabled", ip=actor.ip, via=actor.via, target=key.masked,
                                detail=f"was: {was}" if was else "was not disabled")
        return {"enabled": {"fp": fp, "key": key.masked}}

    async def reset_key(self, actor: Actor, fp: str) -> dict[str, Any]:
        kl = self.kl
        key = self.key(fp)
        kl.pool.reset_today(key)
        await kl.flusher.flush()
        await kl.flusher.store.reset_key_day(kl.pool.day, fp)  # the counters' store: SQLite or Redis
        await self.audit.record("key_reset", ip=actor.ip, via=actor.via, target=key.masked,
                                detail=f"counters of quota day {kl.pool.day}")
        return {"reset": {"fp": fp, "key": key.masked, "day": kl.pool.day}}

    def test_keys(self, actor: Actor, fps: Any) -> dict[str, Any]:
        pool = self.kl.pool
        if fps is None:
            keys = list(pool.keys)
        elif isinstance(fps, list) and all(isinstance(f, str) for f in fps):
            keys = [self.key(f) for f in fps]
        else:
            raise ApiError(400, "Send {\"keys\": [fingerprints]} or {} to test every key.", param="keys")
        if not keys:
            raise ApiError(400, "There is no key to test.", param="keys")
        return self.tests.start(keys, actor).view()

    async def _tested(self, job: TestJob) -> None:
        v = job.view()
        await self.audit.record("keys_tested", ip=job.actor.ip, via=job.actor.via,
                                target=", ".join(k.masked for k in job.keys[:20]),
                                detail=f"{v['ok']} working, {v['failed']} failing")

    def test_job(self, job_id: str) -> dict[str, Any]:
        job = self.tests.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"No key test {job_id!r} (only the last few are kept).", code="job_not_found")
        return job.view()

    async def export_keys(self, actor: Actor, password: Any) -> dict[str, Any]:
        try:
            self.check_password(actor.ip, password)
        except ApiError as e:
            if e.status == 401:
                self.audit.refused("export_refused", ip=actor.ip, via=actor.via)
            raise
        # real keys only: a Vertex service account's entry is a handle (its JSON stays in the environment),
        # a keyless local upstream has none
        keys = [k for k in self.kl.pool.keys if k.usable and k.secret and not k.secret.startswith(HANDLE)]
        await self.audit.record("keys_exported", ip=actor.ip, via=actor.via, detail=f"{len(keys)} working keys")
        return {"keys": [k.secret for k in keys], "count": len(keys)}

    # -- settings --------------------------------------------------------------------------------

    async def change_settings(self, actor: Actor, changes: Any) -> dict[str, Any]:
        checked = self.live.check(changes)
        self.kl.apply_settings(await self.live.save(checked, self.kl.clock.time()))
        for name, value in checked.items():
            await self.audit.record("setting_changed", ip=actor.ip, via=actor.via, target=name, detail=value)
        return self.settings()

    async def reset_settings(self, actor: Actor, names: list[str]) -> dict[str, Any]:
        unknown = [n for n in names if n not in self.live.overrides]
        if unknown:
            raise ApiError(404, f"Not changed on the dashboard: {', '.join(unknown)}.", code="setting_not_changed")
        self.kl.apply_settings(await self.live.reset(names))
        for n in names:
            await self.audit.record("setting_reset", ip=actor.ip, via=actor.via, target=n,
                                    detail=f"back to the environment: {self.live.env_text(n)}")
        return self.settings()
