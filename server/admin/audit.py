"""The audit trail: every action taken through the dashboard or the admin API, who (IP, how) and when.

Refused passwords are the one kind of entry a stranger can cause at will, from as many addresses as
they like, so they are not written one row each: they are counted in memory (bounded) and the next
periodic flush writes one row per kind saying how many came from how many addresses, the busiest first.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..clock import Clock
from ..store.db import Database
from ..store.errors import StoreDown
from ..store.history import History, SqliteHistory

MAX_ADDRESSES = 1000   # addresses counted by name between two flushes; more are counted as "others"
SHOWN = 10             # addresses named in the row


class Audit:
    def __init__(self, db: Database, clock: Clock, redact: Any, history: History | None = None):
        self.db = db
        self.history: History = history if history is not None else SqliteHistory(db)  # where `recent` reads
        self.clock = clock
        self.redact = redact
        self._refused: dict[tuple[str, str], dict[str, int]] = {}  # (action, via) → address → count
        self._others: dict[tuple[str, str], int] = {}
        self._pending: list[tuple[Any, ...]] = []  # rows recorded, written by the next flush
        # writes everything pending now (the app sets the flusher's flush; the rows go in its batch)
        self.write: Callable[[], Awaitable[Any]] | None = None

    async def record(self, action: str, *, ip: str | None, via: str, target: str | None = None,
                     detail: str | None = None) -> None:
        detail = self.redact(detail) if detail else detail
        # refusals counted so far go first, so the trail stays in the order things happened
        rows = self.drain() + [(self.clock.time(), ip, via, action, target, detail)]
        self._pending = rows
        if self.write is None:
            return  # written by the next flush
        try:
            await self.write()  # through the flusher's store (SQLite or Redis), at once
        except StoreDown:
            pass  # Redis is away: the rows wait in the flusher's batch and are written when it is back

    def refused(self, action: str, *, ip: str, via: str) -> None:
        """A wrong password (sign-in, export): counted now, written in aggregate by the next flush."""
        by_ip = self._refused.setdefault((action, via), {})
        if ip in by_ip or len(by_ip) < MAX_ADDRESSES:
            by_ip[ip] = by_ip.get(ip, 0) + 1
        else:
            self._others[(action, via)] = self._others.get((action, via), 0) + 1

    def drain(self) -> list[tuple[Any, ...]]:
        """Rows for what was counted since the last drain (the flusher writes them)."""
        rows, self._pending = self._pending, []
        now = self.clock.time()
        for (action, via), by_ip in self._refused.items():
            others = self._others.get((action, via), 0)
            total = sum(by_ip.values()) + others
            busiest = sorted(by_ip.items(), key=lambda kv: -kv[1])[:SHOWN]
            addresses = len(by_ip) + (1 if others else 0)
            shown = ", ".join(f"{ip} ({n})" for ip, n in busiest)
            rest = total - sum(n for _, n in busiest)
            more = f", and {rest} from other addresses" if addresses > SHOWN or others else ""
            client = busiest[0][0] if len(by_ip) == 1 and not others else None
            rows.append((now, client, via, action, None,
                         f"{total} wrong password{'s' if total != 1 else ''} from {addresses} "
                         f"address{'es' if addresses != 1 else ''}: {shown}{more}"))
        self._refused.clear()
        self._others.clear()
        return rows

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return [{"ts": ts, "client_ip": ip, "via": via, "action": a, "target": t, "detail": d}
                for ts, ip, via, a, t, d in await self.history.audit(limit)]
