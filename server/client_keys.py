"""Client keys: the owner shares the pool with friends and apps, each under a key of its own with its own share.

`PASSWORD` stays the owner's key (the whole API and the playground). A client key opens the API only — every
door the same way (Chat Completions, Responses, Messages, the Gemini API routes, embeddings, images, speech) —
never the dashboard or the admin API. Each has an optional daily request limit and daily token limit (in the
quota day), a requests-per-minute limit, a model allow-list (glob patterns, matched against the model that
serves the request, after MODEL_ALIASES), an expiry date, and an on/off switch.

Keys come from two places: the dashboard / admin API (the key is shown once at creation and stored only as
its SHA-256: a client key is 256 random bits, so a fast hash is as good as a slow one), and the `CLIENT_KEYS`
setting (JSON or TOML, for reproducible deployments; read at start, shown read-only, never written to disk).

Usage (requests and tokens per day, key and model) is counted in memory on the request path and written by
the periodic flush, like the Gemini keys' usage. The refusals: 401 for an expired or switched-off key, 403 for
a model the key may not use, 429 with Retry-After when a limit is reached.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import math
import secrets
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

from .clock import Clock
from .errors import ApiError, bad_request, encodable
from .limits import MinuteShares, retry_in
from .pool.quota import QuotaDay
from .settings import Settings, SettingsError
from .store.db import Database

KEY_PREFIX = "kl-"
PREFIX_SHOWN = 8      # characters of a key shown to tell keys apart ("kl-AbCdE")
MAX_NAME = 80
MAX_MODELS = 50
MAX_KEYS = 1000       # keys the dashboard may create (bounded: each is a row and a dictionary entry)
HISTORY_DAYS = 30
MAX_LIMIT = 2 ** 53   # a limit beyond this is no limit (and SQLite's integers end at 2**63)
FIELDS = ("name", "daily_requests", "daily_tokens", "rpm", "models", "expires", "enabled")
STORED = ("id", "name", "key_hash", "prefix", "daily_requests", "daily_tokens", "rpm", "models", "expires",
          "enabled", "created_at")  # what a shared store keeps of a dashboard key (its hash, never the key)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass
class ClientKey:
    id: str
    name: str
    key_hash: str
    prefix: str
    daily_requests: int | None = None
    daily_tokens: int | None = None
    rpm: int | None = None
    models: list[str] = field(default_factory=list)
    expires: str | None = None  # YYYY-MM-DD: usable through that day (in the quota day's zone)
    enabled: bool = True
    source: str = "dashboard"   # or "config" (CLIENT_KEYS)
    created_at: float = 0.0
    minute: collections.deque[float] = field(default_factory=collections.deque, repr=False)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "daily_requests": self.daily_requests,
                "daily_tokens": self.daily_tokens, "rpm": self.rpm, "models": list(self.models),
                "expires": self.expires, "enabled": self.enabled, "source": self.source,
                "created_at": self.created_at}


# -- validation (one place for the dashboard and CLIENT_KEYS) --------------------------------------------------

def _limit(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"{name} must be a whole number from 1 to {MAX_LIMIT} (or empty for no limit)")
    return value


def _models(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if not isinstance(value, list) or not all(isinstance(m, str) and 0 < len(m) <= 128 for m in value):
        raise ValueError("models must be a list of model ids or glob patterns (such as gemini-2.5-*)")
    if len(value) > MAX_MODELS:
        raise ValueError(f"models holds more than {MAX_MODELS} patterns")
    return list(value)


def _expires(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10]).isoformat()
        except ValueError:
            pass
    raise ValueError("expires must be a date such as 2027-01-31")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("name is required")
    if len(value.strip()) > MAX_NAME:
        raise ValueError(f"name is longer than {MAX_NAME} characters")
    if not encodable(value):
        raise ValueError("name is not valid Unicode text (it holds a lone surrogate such as \\ud800)")
    return value.strip()


def validated(raw: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    """The fields of a client key from a request or a CLIENT_KEYS table; ValueError naming the first bad one."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        if name not in raw:
            if not partial and name == "name":
                raise ValueError("name is required")
            continue
        value = raw[name]
        if name == "name":
            out[name] = _name(value)
        elif name in ("daily_requests", "daily_tokens", "rpm"):
            out[name] = _limit(value, name)
        elif name == "models":
            out[name] = _models(value)
        elif name == "expires":
            out[name] = _expires(value)
        elif name == "enabled":
            if not isinstance(value, bool):
                raise ValueError("enabled must be true or false")
            out[name] = value
    unknown = sorted(set(raw) - set(FIELDS) - {"key"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    return out


def parse_config(text: str) -> list[tuple[str, dict[str, Any]]]:
    """CLIENT_KEYS (JSON list, or TOML `[[client_keys]]` tables) → [(key, fields)]; SettingsError listing every
    problem (Keyloom then refuses to start: a key the owner meant to give must not silently not work)."""
    if not text.strip():
        return []
    problems: list[str] = []
    stripped = text.lstrip()
    try:
        data: Any = json.loads(text) if stripped.startswith(("[", "{")) and not stripped.startswith("[[") \
            else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise SettingsError([f"CLIENT_KEYS: cannot be read as JSON or TOML: {e}"]) from None
    if isinstance(data, dict):
        data = data.get("client_keys", data.get("keys"))
    if not isinstance(data, list):
        raise SettingsError(["CLIENT_KEYS: expected a list of tables (JSON list, or TOML [[client_keys]])"])
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for i, raw in enumerate(data):
        where = f"CLIENT_KEYS[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: each entry must be a table with name and key")
            continue
        key = raw.get("key")
        if not isinstance(key, str) or len(key.strip()) < 16:
            problems.append(f"{where}: key must be a string of at least 16 characters")
            continue
        if key in seen:
            problems.append(f"{where}: the same key appears twice")
            continue
        seen.add(key)
        try:
            out.append((key.strip(), validated(raw)))
        except ValueError as e:
            problems.append(f"{where}: {e}")
    if problems:
        raise SettingsError(problems)
    return out


# -- where definitions live -------------------------------------------------------------------------------------

class ClientKeyStore(Protocol):
    """Where the dashboard's client keys are kept, and where the per-day usage history is read from: SQLite
    (`SqliteClientKeyStore`, below) or Redis (server/store/redis_client_keys.py). The registry holds the keys in
    memory (the request path never waits on a store); a store other processes share tells it to read them
    again when one of them changed something (`on_change`). Usage counting itself is the flush's."""

    async def load_all(self) -> list[ClientKey]:
        """Every key made on the dashboard."""
        ...

    async def put(self, ck: ClientKey) -> None:
        """Create or replace one key (its definition and hash; never the key itself)."""
        ...

    async def delete(self, key_id: str) -> None:
        ...

    async def history(self, since: str, until: str) -> list[tuple[str, str, int, int]]:
        """(key id, day, requests, tokens) summed over models, for since <= day < until."""
        ...

    def on_change(self, reload: Callable[[], Awaitable[None]]) -> None:
        """Call `reload` when another process changed the keys (nothing to do for a store one process owns)."""
        ...


class SqliteClientKeyStore:
    """The client_key table, and client_key_usage for the history (one process owns the file: nobody else
    changes the keys behind its back)."""

    def __init__(self, db: Database):
        self.db = db

    async def load_all(self) -> list[ClientKey]:
        out = []
        for row in await self.db.fetchall(
                "SELECT id, name, key_hash, prefix, daily_requests, daily_tokens, rpm, models, expires, enabled, "
                "created_at FROM client_key"):
            id_, name, h, prefix, dr, dtk, rpm, models, expires, enabled, created = row
            out.append(ClientKey(id_, name, h, prefix, dr, dtk, rpm, json.loads(models or "[]"), expires,
                                 bool(enabled), "dashboard", created))
        return out

    async def put(self, ck: ClientKey) -> None:
        await self.db.write([(
            "INSERT OR REPLACE INTO client_key (id, name, key_hash, prefix, daily_requests, daily_tokens, rpm, models, "
            "expires, enabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(ck.id, ck.name, ck.key_hash, ck.prefix, ck.daily_requests, ck.daily_tokens, ck.rpm,
              json.dumps(ck.models), ck.expires, int(ck.enabled), ck.created_at)])])

    async def delete(self, key_id: str) -> None:
        await self.db.write([("DELETE FROM client_key WHERE id = ?", [(key_id,)])])

    async def history(self, since: str, until: str) -> list[tuple[str, str, int, int]]:
        return [(k, d, int(r), int(t)) for k, d, r, t in await self.db.fetchall(
            "SELECT key_id, day, SUM(requests), SUM(tokens) FROM client_key_usage WHERE day >= ? AND day < ? "
            "GROUP BY key_id, day", (since, until))]

    def on_change(self, reload: Callable[[], Awaitable[None]]) -> None:
        pass


# -- the registry ------------------------------------------------------------------------------------------------

@dataclass
class DayUsage:
    requests: int = 0
    tokens: int = 0


class ClientKeys:
    def __init__(self, store: ClientKeyStore, clock: Clock, settings: Callable[[], Settings], quota_day: QuotaDay,
                 configured: list[tuple[str, dict[str, Any]]] | None = None):
        self.store = store
        self.clock = clock
        self.settings = settings
        self.quota_day = quota_day
        self.by_hash: dict[str, ClientKey] = {}
        self.by_id: dict[str, ClientKey] = {}
        self.day = quota_day.today()
        # today's usage per key and model (the request path adds; the flush writes what changed)
        self.usage: dict[tuple[str, str], DayUsage] = {}
        self.totals: dict[str, DayUsage] = {}  # today's use per key over all models (the sum of `usage`)
        self._delta: dict[tuple[str, str], DayUsage] = {}  # added since the last drain (the flush writes deltas)
        self._pending: list[tuple[str, str, str, int, int]] = []
        self.minutes = MinuteShares(clock)  # the app passes the client limits' one (shared per-minute counts)
        for key, fields in configured or ():
            h = key_hash(key)
            ck = ClientKey(id="cfg-" + h[:12], key_hash=h, prefix=key[:PREFIX_SHOWN], source="config", **fields)
            self._add(ck)
        store.on_change(self.reload)

    def _add(self, ck: ClientKey) -> None:
        self.by_hash[ck.key_hash] = ck
        self.by_id[ck.id] = ck

    async def load(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        """(Re)read the dashboard's keys: at start, and when another process changed them (Redis mode). A key
        still there is updated in place, so its per-minute window and the requests holding it see the change."""
        kept: set[str] = set()
        for ck in await self.store.load_all():
            held = self.by_hash.get(ck.key_hash)
            if held is not None and held.source == "config":  # also in CLIENT_KEYS: the configuration's wins
                continue
            old = self.by_id.get(ck.id)
            if old is not None and old.source == "dashboard":
                for name in FIELDS:
                    setattr(old, name, getattr(ck, name))
            else:
                self._add(ck)
            kept.add(ck.id)
        for gone in [c for c in self.by_id.values() if c.source == "dashboard" and c.id not in kept]:
            self.by_id.pop(gone.id, None)
            self.by_hash.pop(gone.key_hash, None)

    def find(self, credential: str) -> ClientKey | None:
        return self.by_hash.get(key_hash(credential)) if self.by_hash else None

    # -- on the request path -------------------------------------------------------------------------

    def _check_day(self) -> None:
        day = self.quota_day.today()
        if day != self.day:
            self._pending += [(self.day, k, m, u.requests, u.tokens) for (k, m), u in self._delta.items()]
            self._delta = {}
            self.usage = {}
            self.totals = {}
            self.day = day

    def _today(self, ck: ClientKey) -> DayUsage:
        """The key's use today over every model (kept as it grows: admission reads it on every request)."""
        return self.totals.get(ck.id) or DayUsage()

    def usable(self, ck: ClientKey) -> ApiError | None:
        """Refused before anything else when the key is switched off or expired (401)."""
        if not ck.enabled:
            return ApiError(401, f"The client key {ck.prefix}… ({ck.name}) is switched off; ask the owner of this "
                                 "Keyloom.", code="client_key_disabled")
        if ck.expires is not None and self.quota_day.today() > ck.expires:
            return ApiError(401, f"The client key {ck.prefix}… ({ck.name}) expired on {ck.expires}; ask the owner "
                                 "of this Keyloom for a new one.", code="client_key_expired")
        return None

    @staticmethod
    def allows(ck: ClientKey, model: str) -> bool:
        return not ck.models or any(fnmatchcase(model, p) for p in ck.models)

    def model_refusal(self, ck: ClientKey, model: str) -> ApiError | None:
        """403 when the key may not use `model` (also for calls that count nothing, such as count_tokens)."""
        if self.allows(ck, model):
            return None
        return ApiError(403, f"The client key {ck.prefix}… may not use {model[:80]}; it may use "
                             f"{', '.join(ck.models)}.", code="model_not_allowed", param="model")

    def admit(self, ck: ClientKey, model: str) -> ApiError | None:
        """Count one request of `ck` for `model` (the model that serves it), or say why it is refused."""
        refused = self.usable(ck)
        if refused is not None:
            return refused
        refused = self.model_refusal(ck, model)
        if refused is not None:
            return refused
        self._check_day()
        if ck.rpm:
            now = self.clock.monotonic()
            window = ck.minute
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) + self.minutes.others(f"ck:{ck.id}") >= ck.rpm:
                wait = retry_in(window, now, self.clock.time())
                return ApiError(429, f"The client key {ck.prefix}… may make {ck.rpm} requests per minute; retry "
                                     f"in {wait}s.", type="rate_limit_error", code="rate_limit_exceeded",
                                headers={"Retry-After": str(wait)})
        if ck.daily_requests or ck.daily_tokens:
            today = self._today(ck)
            over = (ck.daily_requests and today.requests >= ck.daily_requests and
                    f"its {ck.daily_requests} requests") or \
                   (ck.daily_tokens and today.tokens >= ck.daily_tokens and f"its {ck.daily_tokens} tokens")
            if over:
                wait = max(1, math.ceil(self.quota_day.next_reset() - self.clock.time()))
                return ApiError(429, f"The client key {ck.prefix}… used {over} for today; the count resets in "
                                     f"{wait}s.", type="rate_limit_error", code="rate_limit_exceeded",
                                headers={"Retry-After": str(wait), "x-should-retry": "false"})
        if ck.rpm:
            ck.minute.append(self.clock.monotonic())
            self.minutes.count(f"ck:{ck.id}")
        u = self.usage.setdefault((ck.id, model), DayUsage())
        u.requests += 1
        self.totals.setdefault(ck.id, DayUsage()).requests += 1
        self._delta.setdefault((ck.id, model), DayUsage()).requests += 1
        return None

    def spent(self, ck: ClientKey, model: str, tokens: int) -> None:
        """Tokens of a finished request (the request was counted at admission)."""
        if tokens <= 0:
            return
        self._check_day()
        u = self.usage.setdefault((ck.id, model), DayUsage())
        u.tokens += tokens
        self.totals.setdefault(ck.id, DayUsage()).tokens += tokens
        self._delta.setdefault((ck.id, model), DayUsage()).tokens += tokens

    # -- the flush -----------------------------------------------------------------------------------

    def drain(self) -> list[tuple[str, str, str, int, int]]:
        """(day, key id, model, requests added, tokens added) since the last drain."""
        self._check_day()
        out = self._pending
        self._pending = []
        out += [(self.day, k, m, u.requests, u.tokens) for (k, m), u in self._delta.items()]
        self._delta = {}
        return out

    def load_usage(self, day: str, rows: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Today's usage as stored (start-up)."""
        if day != self.day:
            return
        self.usage = {k: DayUsage(req, tok) for k, (req, tok) in rows.items()}
        self._sum()

    def settle(self, day: str, totals: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Every process's usage of today (a shared store's read-back), plus what was added since the drain."""
        if day != self.day:
            return
        usage = {k: DayUsage(req, tok) for k, (req, tok) in totals.items()}
        for k, d in self._delta.items():
            u = usage.setdefault(k, DayUsage())
            u.requests += d.requests
            u.tokens += d.tokens
        self.usage = usage
        self._sum()

    def _sum(self) -> None:
        self.totals = {}
        for (key_id, _), u in self.usage.items():
            t = self.totals.setdefault(key_id, DayUsage())
            t.requests += u.requests
            t.tokens += u.tokens

    # -- the owner's side (admin API) --------------------------------------------------------------------

    async def history(self) -> dict[str, list[dict[str, Any]]]:
        """Per key: requests and tokens per day, the last HISTORY_DAYS days (today from memory)."""
        since = (dt.date.fromisoformat(self.day) - dt.timedelta(days=HISTORY_DAYS - 1)).isoformat()
        days: dict[tuple[str, str], DayUsage] = {}
        for key_id, day, req, tok in await self.store.history(since, self.day):
            days[(key_id, day)] = DayUsage(req, tok)
        for ck in self.by_id.values():
            days[(ck.id, self.day)] = self._today(ck)
        out: dict[str, list[dict[str, Any]]] = {}
        for (key_id, day), u in sorted(days.items(), key=lambda kv: kv[0][1]):
            out.setdefault(key_id, []).append({"day": day, "requests": u.requests, "tokens": u.tokens})
        return out

    async def listing(self) -> list[dict[str, Any]]:
        history = await self.history()
        out = []
        for ck in sorted(self.by_id.values(), key=lambda c: (c.source != "config", c.created_at, c.name)):
            today = self._today(ck)
            out.append({**ck.public(), "usage": {"today": {"requests": today.requests, "tokens": today.tokens},
                                                  "days": history.get(ck.id, [])}})
        return out

    def entry(self, key_id: str) -> ClientKey:
        ck = self.by_id.get(key_id)
        if ck is None:
            raise ApiError(404, "No such client key.", code="not_found")
        return ck

    @staticmethod
    def _fields(raw: Any, partial: bool) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise bad_request("the request body must be a JSON object")
        try:
            return validated(raw, partial)
        except ValueError as e:
            raise bad_request(str(e)) from None

    async def create(self, raw: Any) -> tuple[ClientKey, str]:
        fields = self._fields(raw, partial=False)
        if "key" in raw:
            raise bad_request("the key is made by Keyloom (and shown once); send no key")
        if sum(1 for c in self.by_id.values() if c.source == "dashboard") >= MAX_KEYS:
            raise ApiError(409, f"There are {MAX_KEYS} client keys already; remove some first.", code="too_many_keys")
        key = new_key()
        ck = ClientKey(id=secrets.token_hex(6), key_hash=key_hash(key), prefix=key[:PREFIX_SHOWN],
                       created_at=self.clock.time(), **fields)
        await self._save(ck)
        self._add(ck)
        return ck, key

    def _mutable(self, key_id: str) -> ClientKey:
        ck = self.entry(key_id)
        if ck.source == "config":
            raise ApiError(409, "This client key is declared in CLIENT_KEYS; change it there.", code="from_config")
        return ck

    async def update(self, key_id: str, raw: Any) -> ClientKey:
        ck = self._mutable(key_id)
        fields = self._fields(raw, partial=True)
        if "key" in raw:
            raise bad_request("a client key cannot be changed; make a new one")
        changed = dataclasses.replace(ck, **fields)
        await self._save(changed)  # saved first: a refused write leaves the key as it was, in memory too
        for name, value in fields.items():
            setattr(ck, name, value)
        return ck

    async def delete(self, key_id: str) -> None:
        ck = self._mutable(key_id)
        await self.store.delete(ck.id)
        self.by_id.pop(ck.id, None)
        self.by_hash.pop(ck.key_hash, None)

    async def _save(self, ck: ClientKey) -> None:
        await self.store.put(ck)
