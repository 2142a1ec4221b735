"""One egress per key (UPSTREAM_PROXIES): which proxy each key leaves through, and what happens when one fails.

Why per key: Google sees the address a key calls from. A pool whose keys all call from one address looks like one
user with many keys; spread over several proxies, each key keeps calling from one address of its own.

The assignment is rendezvous (highest-random-weight) hashing: every proxy gets a weight per key, a hash of the
proxy's identity and the key's fingerprint, and the key goes through the heaviest. It needs no table and no
coordination, it is the same after a restart, and adding or removing a proxy moves only the keys that proxy wins
or held (about 1/n of them), never shuffles the others. The same order gives each key its second choice, third
choice…: that is where it goes while the proxies before it rest.

A proxy that fails (refused connection, refused credentials, a time-out while connecting, a tunnel it will not
open: `ProxyFailed`, raised before the origin saw anything) rests like a key that failed: a short rest that
doubles with each failure in a row, capped. The same request goes on at once through the key's next proxy, so a
proxy failure never reaches the dispatcher as the key's failure and costs the key nothing. When the rest is over
the proxy gets its next request again; the first success clears its record and its keys are home again.

When every proxy of a key rests, the one whose rest ends first is tried anyway (a request must go somewhere, and
that one is the likeliest to be back); if it fails too the caller gets the ProxyFailed, which
`transport_failure` turns into Unreachable (not reached): the key's standing is untouched (policy.py: NONE).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..clock import Clock
from ..redact import fingerprint
from .http import HttpClient, HttpError, Origin, Proxy, ProxyFailed, Response

log = logging.getLogger("keyloom.egress")

REST_BASE = 5.0     # seconds a proxy rests after its first failure in a row; doubles with each one after
REST_MAX = 300.0
_FP_CACHE = 4096    # key fingerprints remembered (a pool is smaller; a bound all the same)


class Requester(Protocol):
    """What an upstream client needs of the road its calls take: HttpClient, or one key's route over proxies."""

    async def request(self, method: str, origin: Origin, target: str, *, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"", timeout: float = 300.0, limit: int | None = None,
                      allow_private: bool = True) -> Response: ...

    async def open(self, method: str, origin: Origin, target: str, *, headers: Iterable[tuple[str, str]] = (),
                   body: bytes = b"", timeout: float = 300.0, allow_private: bool = True) -> Response: ...


@dataclass(eq=False)
class Exit:
    """One proxy of UPSTREAM_PROXIES: its own connection pool, and its health."""

    n: int  # its place in the list, from 1 (how the page and the log name it)
    proxy: Proxy
    client: HttpClient
    failures: int = 0  # in a row
    rest_until: float = 0.0
    last_error: str | None = None
    last_error_at: float | None = None
    _seed: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self._seed = self.proxy.identity.encode() + b"\n"  # scheme, user, host, port: never the password

    def weight(self, fp: str) -> int:
        return int.from_bytes(hashlib.sha256(self._seed + fp.encode()).digest()[:8], "big")

    def resting(self, now: float) -> bool:
        return self.rest_until > now


class Egress:
    """The proxies of UPSTREAM_PROXIES and which one each key takes. Empty: every key takes `fallback` (the client
    of UPSTREAM_PROXY, or direct), as before per-key proxies existed."""

    def __init__(self, urls: Iterable[str], clock: Clock, fallback: HttpClient, *, connect_timeout: float = 10.0):
        self.clock = clock
        self.fallback = fallback
        self.exits: list[Exit] = []
        seen: set[str] = set()
        for url in urls:
            client = HttpClient(connect_timeout=connect_timeout, proxy=url)
            assert client.proxy is not None
            if client.proxy.identity in seen:  # the same proxy twice (perhaps with another password): once
                continue
            seen.add(client.proxy.identity)
            self.exits.append(Exit(len(self.exits) + 1, client.proxy, client))
        self._order: dict[str, tuple[Exit, ...]] = {}
        # a proxy rested or came back (Redis mode: the other processes are told at once)
        self.on_change: Callable[[dict[str, Any]], None] | None = None
        self._fps: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.exits)

    def secrets(self) -> list[str]:
        """The proxies' passwords in every form they travel in, for the redactor."""
        return [s for e in self.exits for s in e.proxy.secrets()]

    async def close(self) -> None:
        for e in self.exits:
            await e.client.close()

    def order(self, fp: str) -> tuple[Exit, ...]:
        """The key's proxies, first choice first (rendezvous: heaviest weight first)."""
        found = self._order.get(fp)
        if found is None:
            if len(self._order) >= _FP_CACHE:
                self._order.clear()
            found = self._order[fp] = tuple(sorted(self.exits, key=lambda e: e.weight(fp), reverse=True))
        return found

    def fingerprint(self, key: str) -> str:
        fp = self._fps.get(key)
        if fp is None:
            if len(self._fps) >= _FP_CACHE:
                self._fps.clear()
            fp = self._fps[key] = fingerprint(key)
        return fp

    def candidates(self, fp: str) -> list[Exit]:
        """Where a request of this key may go now, in order: its proxies that are not resting; when all rest,
        the one whose rest ends first."""
        ranked = self.order(fp)
        if not ranked:
            return []
        now = self.clock.time()
        up = [e for e in ranked if not e.resting(now)]
        return up or [min(ranked, key=lambda e: e.rest_until)]

    def home(self, fp: str) -> Exit | None:
        ranked = self.order(fp)
        return ranked[0] if ranked else None

    def current(self, fp: str) -> Exit | None:
        found = self.candidates(fp)
        return found[0] if found else None

    def route(self, fp: str) -> Requester:
        """The road the calls of the key with this fingerprint (Key.fp, as the pool and the page know it) take."""
        if not self.exits:
            return self.fallback
        return KeyRoute(self, fp)

    def failed(self, exit_: Exit, error: HttpError) -> ProxyFailed:
        """Rest the proxy; → the failure as it may be shown: naming the proxy as scheme://host:port only (the
        HTTP client names it with its user name, which a page and a log need not show either)."""
        now = self.clock.time()
        exit_.failures += 1
        delay = min(REST_MAX, REST_BASE * 2 ** (exit_.failures - 1))
        exit_.rest_until = now + delay
        message = str(error).replace(exit_.proxy.shown, f"#{exit_.n} {exit_.proxy.masked}")
        exit_.last_error, exit_.last_error_at = message, now
        log.warning("proxy #%d %s failed (%s); it rests %gs, its keys go through their next proxy", exit_.n,
                    exit_.proxy.masked, message, delay)
        self._changed(exit_)
        return ProxyFailed(message)

    def succeeded(self, exit_: Exit) -> None:
        if exit_.failures or exit_.rest_until:
            log.info("proxy #%d %s works again; its keys are back", exit_.n, exit_.proxy.masked)
            exit_.failures, exit_.rest_until = 0, 0.0
            self._changed(exit_)

    def _changed(self, exit_: Exit) -> None:
        if self.on_change is not None:
            self.on_change(self.health(exit_))

    @staticmethod
    def health(exit_: Exit) -> dict[str, Any]:
        """A proxy's health as other processes take it (server/app.py publishes it in Redis mode): named by a
        hash of its identity (scheme, user, host, port), never its password; the error is already masked."""
        return {"id": hashlib.sha256(exit_.proxy.identity.encode()).hexdigest()[:16], "failures": exit_.failures,
                "rest_until": exit_.rest_until, "last_error": exit_.last_error, "last_error_at": exit_.last_error_at}

    def apply_health(self, data: Any) -> None:
        """Another process's word on a proxy both use: it rests here too (or works again)."""
        if not isinstance(data, dict):
            return
        for exit_ in self.exits:
            if self.health(exit_)["id"] == data.get("id"):
                try:
                    exit_.failures = int(data.get("failures") or 0)
                    exit_.rest_until = float(data.get("rest_until") or 0.0)
                except (TypeError, ValueError):
                    return
                error = data.get("last_error")
                exit_.last_error = error if isinstance(error, str) else None
                at = data.get("last_error_at")
                exit_.last_error_at = float(at) if isinstance(at, int | float) else None

    def view(self, fps: Iterable[str], redact: Callable[[str], str] = lambda s: s) -> list[dict[str, Any]]:
        """Each proxy as the page shows it (scheme://host:port, never a credential): health, how many keys it is
        home to and how many leave through it now."""
        now = self.clock.time()
        homes: dict[int, int] = {}
        now_through: dict[int, int] = {}
        for fp in fps:
            h, c = self.home(fp), self.current(fp)
            if h is not None:
                homes[h.n] = homes.get(h.n, 0) + 1
            if c is not None:
                now_through[c.n] = now_through.get(c.n, 0) + 1
        return [{"n": e.n, "url": e.proxy.masked, "state": "resting" if e.resting(now) else "ok",
                 "until": e.rest_until if e.resting(now) else None, "failures": e.failures,
                 "last_error": redact(e.last_error) if e.last_error else None, "last_error_at": e.last_error_at,
                 "keys": homes.get(e.n, 0), "carrying": now_through.get(e.n, 0)} for e in self.exits]

    def key_view(self, fp: str) -> dict[str, Any] | None:
        """The proxy a key leaves through now, and its own (they differ while its own rests)."""
        h, c = self.home(fp), self.current(fp)
        if h is None or c is None:
            return None
        return {"n": c.n, "url": c.proxy.masked, "home": h.n, "home_url": h.proxy.masked}


class KeyRoute:
    """One key's road: its proxies in its order, the next one taken at once when one fails (see the module's
    docstring). Has HttpClient's request/open, so an upstream client uses it as it would use HttpClient."""

    __slots__ = ("egress", "fp")

    def __init__(self, egress: Egress, fp: str):
        self.egress, self.fp = egress, fp

    async def request(self, method: str, origin: Origin, target: str, *, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"", timeout: float = 300.0, limit: int | None = None,
                      allow_private: bool = True) -> Response:
        return await self._through("request", method, origin, target, headers=tuple(headers), body=body,
                                   timeout=timeout, limit=limit, allow_private=allow_private)

    async def open(self, method: str, origin: Origin, target: str, *, headers: Iterable[tuple[str, str]] = (),
                   body: bytes = b"", timeout: float = 300.0, allow_private: bool = True) -> Response:
        return await self._through("open", method, origin, target, headers=tuple(headers), body=body,
                                   timeout=timeout, allow_private=allow_private)

    async def _through(self, call: str, *args: Any, **kwargs: Any) -> Response:
        """`call` (request or open) through the key's proxies in order: the next at once when one fails (the
        headers are a tuple: they may be sent more than once)."""
        last: ProxyFailed | None = None
        for e in self.egress.candidates(self.fp):
            try:
                resp: Response = await getattr(e.client, call)(*args, **kwargs)
            except ProxyFailed as err:
                last = self.egress.failed(e, err)
                continue
            self.egress.succeeded(e)
            return resp
        assert last is not None
        raise last
