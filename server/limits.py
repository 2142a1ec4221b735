"""Client limits: who a request comes from, how many connections it may hold, requests per minute
across all clients, and per client IP per quota day.

The client IP is the socket's peer unless TRUST_PROXY_HEADERS says how many proxies in
front of Keyloom to trust; only then is X-Forwarded-For read, from the right, so a
client cannot spoof its way past the limit by sending the header itself.
"""
from __future__ import annotations

import collections
import ipaddress
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from tornado.httputil import HTTPServerRequest

from .clock import Clock
from .errors import ApiError
from .pool.quota import QuotaDay
from .settings import Settings

MAX_TRACKED_IPS = 200_000


def proxy_hops(setting: int | str, env: Mapping[str, str]) -> int:
    """TRUST_PROXY_HEADERS → how many proxies to trust. auto: one on a HuggingFace Space (SPACE_ID is set)."""
    if setting == "auto":
        return 1 if env.get("SPACE_ID") else 0
    return int(setting)


def client_ip(request: HTTPServerRequest, hops: int) -> str:
    peer = request.remote_ip or ""
    if hops <= 0:
        return peer
    forwarded = request.headers.get("X-Forwarded-For", "")
    parts = [p.strip() for p in forwarded.split(",") if p.strip()]
    if not parts:
        return peer
    # Each trusted proxy appends the address it saw; the client is the entry `hops` from the right.
    candidate = parts[-hops] if len(parts) >= hops else parts[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


def client_key(ip: str) -> str:
    """What counts as one client for throttles and caps: an IPv4 address, or an IPv6 /64 (one host is normally
    given a whole /64 and could otherwise take a new address for each attempt)."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))


log = logging.getLogger("keyloom.limits")


class ClientAddresses:
    """Resolves a request's client address (see client_ip), and says once when the settings look wrong for
    where Keyloom runs: requests arriving from a loopback or private address that carry X-Forwarded-For
    come through a proxy, and while its headers are not trusted every client is that proxy."""

    def __init__(self, hops: int):
        self.hops = hops
        self.warned = False

    def of(self, request: HTTPServerRequest) -> str:
        if self.hops > 0:
            return client_ip(request, self.hops)
        peer = request.remote_ip or ""
        if not self.warned and "X-Forwarded-For" in request.headers:
            self._warn(peer)
        return peer

    def _warn(self, peer: str) -> None:
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return
        if not (addr.is_loopback or addr.is_private):
            return
        self.warned = True
        log.warning("requests from %s carry X-Forwarded-For, but TRUST_PROXY_HEADERS is off: Keyloom sees every "
                    "client as %s, so a few wrong passwords from anyone lock everyone out and per-client limits "
                    "become one limit for all. Behind one reverse proxy, set TRUST_PROXY_HEADERS=1 (and make the "
                    "proxy set X-Forwarded-For and X-Forwarded-Proto).", peer, peer)


class ClientSlots:
    """Connections (or, behind a trusted proxy, requests in progress) per client, capped so that one address
    cannot hold every slot of MAX_CONNECTIONS. Memory: one counter per client that holds something."""

    def __init__(self, cap: Callable[[], int]):
        self.cap = cap
        self.held: dict[str, int] = {}
        self.refused = 0

    def take(self, client: str) -> bool:
        cap = self.cap()
        n = self.held.get(client, 0)
        if cap and n >= cap:
            self.refused += 1
            return False
        self.held[client] = n + 1
        return True

    def give(self, client: str) -> None:
        n = self.held.get(client, 0) - 1
        if n > 0:
            self.held[client] = n
        else:
            self.held.pop(client, None)


class MinuteShares:
    """Per-minute limits (MAX_REQUESTS_PER_MINUTE, a client key's rpm) across processes that share a store.

    Each process keeps its exact sliding window of the last 60 s, as alone. With a shared store it also counts
    its admissions per wall-clock minute and name ("*" for the global limit, "ck:{id}" per client key); the
    flush tick adds those counts into the store and reads back the cluster's per-minute totals. What the
    *others* admitted is then estimated for the last 60 s the usual sliding-window way: all of this minute's,
    and the previous minute's weighted by how much of it is still inside the window. Like the daily limits,
    this is as fresh as the last tick. Off (a no-op) with one process on SQLite."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.enabled = False
        self._mine: dict[tuple[int, str], int] = {}    # (minute, name) → admitted here
        self._delta: dict[tuple[int, str], int] = {}   # admitted here since the last drain
        self._totals: dict[tuple[int, str], int] = {}  # the cluster's, as last read back
        self._minute = 0

    def count(self, name: str) -> None:
        if self.enabled:
            minute = int(self.clock.time() // 60)
            if minute != self._minute:  # counts older than the window say nothing to anyone: drop them, so a long
                self._minute = minute   # Redis outage does not make them pile up
                for table in (self._mine, self._delta):
                    for k in [k for k in table if k[0] < minute - 1]:
                        del table[k]
            k = (minute, name)
            self._mine[k] = self._mine.get(k, 0) + 1
            self._delta[k] = self._delta.get(k, 0) + 1

    def others(self, name: str) -> int:
        """Requests other processes admitted under `name` in the last 60 s (estimated, as of the last tick)."""
        if not self.enabled or not self._totals:
            return 0
        now = self.clock.time()
        minute = int(now // 60)
        seen = 0.0
        for m, weight in ((minute, 1.0), (minute - 1, 1.0 - (now % 60) / 60)):
            k = (m, name)
            written = self._mine.get(k, 0) - self._delta.get(k, 0)
            seen += weight * max(0, self._totals.get(k, 0) - written)
        return int(seen)

    def drain(self) -> list[tuple[int, str, int]]:
        out = [(m, name, n) for (m, name), n in self._delta.items()]
        self._delta = {}
        return out

    def settle(self, totals: dict[tuple[int, str], int]) -> None:
        self._totals = totals
        oldest = int(self.clock.time() // 60) - 1
        for k in [k for k in self._mine if k[0] < oldest]:
            del self._mine[k]

    def minutes(self) -> list[int]:
        """The minutes whose totals a read-back needs."""
        minute = int(self.clock.time() // 60)
        return [minute - 1, minute] if self.enabled else []


def retry_in(window: collections.deque[float], now: float, wall: float) -> int:
    """Seconds until the oldest request of the window leaves it (the next wall-clock minute when only other
    processes' requests fill it)."""
    if window:
        return max(1, math.ceil(window[0] + 60.0 - now))
    return max(1, math.ceil(60.0 - wall % 60))


class ClientLimits:
    def __init__(self, settings: Callable[[], Settings], quota_day: QuotaDay, clock: Clock):
        self.settings = settings
        self.quota_day = quota_day
        self.clock = clock
        self._minute: collections.deque[float] = collections.deque()
        self.day = quota_day.today()
        self.per_ip: dict[str, int] = {}   # today's requests per address (the store's + this process's since)
        self._delta: dict[str, int] = {}    # added since the last drain
        self._pending: list[tuple[str, str, int]] = []
        self.client_keys: Any = None  # ClientKeys (set by the app)
        self.minutes = MinuteShares(clock)  # per-minute counts other processes add to (enabled in Redis mode)

    def _check_day(self) -> None:
        day = self.quota_day.today()
        if day != self.day:
            self._pending.extend((self.day, ip, n) for ip, n in self._delta.items())
            self._delta = {}
            self.per_ip = {}
            self.day = day

    def admit(self, ip: str, trace: Any = None) -> ApiError | None:
        """Count one request from `ip`, or say why it is refused (a 429 in the OpenAI shape). A request made with
        a client key (`trace.client`) is first held to that key's own limits and models (server/client_keys.py),
        checked against `trace.model`, the model that serves it."""
        client = getattr(trace, "client", None)
        if client is not None and self.client_keys is not None:
            refused = self.client_keys.admit(client, trace.model)
            if refused is not None:
                return refused
        s = self.settings()
        self._check_day()
        per_minute, per_day = s.MAX_REQUESTS_PER_MINUTE, s.MAX_REQUESTS_PER_DAY_PER_IP
        if per_minute:
            now = self.clock.monotonic()
            window = self._minute
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) + self.minutes.others("*") >= per_minute:
                wait = retry_in(window, now, self.clock.time())
                return ApiError(429, f"Keyloom accepts {per_minute} requests per minute (MAX_REQUESTS_PER_MINUTE); "
                                     f"retry in {wait}s.", type="rate_limit_error", code="rate_limit_exceeded",
                                headers={"Retry-After": str(wait)})
        if per_day:
            used = self.per_ip.get(ip, 0)
            if used >= per_day:
                wait = max(1, math.ceil(self.quota_day.next_reset() - self.clock.time()))
                return ApiError(429, f"This client used its {per_day} requests for today "
                                     f"(MAX_REQUESTS_PER_DAY_PER_IP); the count resets in {wait}s.",
                                type="rate_limit_error", code="rate_limit_exceeded",
                                headers={"Retry-After": str(wait), "x-should-retry": "false"})
        if per_minute:
            self._minute.append(self.clock.monotonic())
            self.minutes.count("*")
        if ip in self.per_ip or len(self.per_ip) < MAX_TRACKED_IPS:
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
            self._delta[ip] = self._delta.get(ip, 0) + 1
        return None

    def load(self, day: str, rows: dict[str, int]) -> None:
        if day == self.day:
            self.per_ip = dict(list(rows.items())[:MAX_TRACKED_IPS])

    def drain(self) -> list[tuple[str, str, int]]:
        """(day, address, requests added since the last drain)."""
        self._check_day()
        out = self._pending
        self._pending = []
        out.extend((self.day, ip, n) for ip, n in self._delta.items())
        self._delta = {}
        return out

    def known(self) -> list[str]:
        """The addresses whose daily counts this process holds (a shared store reads back only these)."""
        return list(self.per_ip) if self.settings().MAX_REQUESTS_PER_DAY_PER_IP else []

    def settle(self, day: str, totals: dict[str, int]) -> None:
        """Every process's counts of today (a shared store's read-back), plus what was added since the drain."""
        if day != self.day:
            return
        for ip, total in totals.items():
            if ip in self.per_ip or len(self.per_ip) < MAX_TRACKED_IPS:
                self.per_ip[ip] = total + self._delta.get(ip, 0)
