"""The audit trail: every action taken through the dashboard or the admin API, who (IP, how) and when."""
from __future__ import annotations

from typing import Any

from ..clock import Clock
from ..store.db import Database


class Audit:
    def __init__(self, db: Database, clock: Clock, redact: Any):
        self.db = db
        self.clock = clock
        self.redact = redact

    async def record(self, action: str, *, ip: str | None, via: str, target: str | None = None,
                     detail: str | None = None) -> None:
        detail = self.redact(detail) if detail else detail
        await self.db.write([("INSERT INTO audit (ts, client_ip, via, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
                              [(self.clock.time(), ip, via, action, target, detail)])])

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT ts, client_ip, via, action, target, detail FROM audit "
                                      "ORDER BY id DESC LIMIT ?", (limit,))
        return [{"ts": ts, "client_ip": ip, "via": via, "action": a, "target": t, "detail": d}
                for ts, ip, via, a, t, d in rows]
