"""The request log's in-memory side: rows wait here until the next flush writes them in a batch."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

log = logging.getLogger("keyloom.requestlog")


OUTCOMES = ("ok", "limited", "client", "error")


def outcome(status: int) -> str:
    """The chart series a status belongs to: ok, limited (429), client (other 4xx), error (5xx)."""
    if status < 400:
        return "ok"
    if status == 429:
        return "limited"
    return "client" if status < 500 else "error"


class DayOf:
    """Calendar day (YYYY-MM-DD) of epoch times in one time zone, with the current day's bounds cached."""

    def __init__(self, tz: str):
        self.tz = tz
        self.zone = ZoneInfo(tz)
        self._start = self._end = 0.0
        self._day = ""

    def __call__(self, ts: float) -> str:
        if self._start <= ts < self._end:
            return self._day
        local = datetime.fromtimestamp(ts, self.zone)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=1, hours=2)).replace(hour=0)  # DST-safe next midnight
        self._start, self._end, self._day = start.timestamp(), end.timestamp(), start.strftime("%Y-%m-%d")
        return self._day

    def start_of(self, ts: float) -> float:
        self(ts)
        return self._start


# What one row may hold of what a client sent or caused: a row is written for every request, so a field a
# client controls must not let it fill the disk (errors are masked before they get here, then cut).
MAX_MODEL = 128
MAX_ERROR = 500
MAX_IP = 64


def _clip(text: str | None, n: int) -> str | None:
    return text if text is None or len(text) <= n else text[:n - 1] + "…"


@dataclass(frozen=True)
class RequestRow:
    ts: float
    model: str | None
    key_fp: str | None
    attempts: int
    status: int
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    client_ip: str | None
    stream: bool
    error: str | None
    client: str | None = None  # the client key's name (None: the owner's PASSWORD or a page session)

    def __post_init__(self) -> None:
        for name, n in (("model", MAX_MODEL), ("error", MAX_ERROR), ("client_ip", MAX_IP), ("client", MAX_MODEL)):
            value = getattr(self, name)
            if value is not None and len(value) > n:
                object.__setattr__(self, name, _clip(value, n))

    def as_tuple(self) -> tuple:
        return (self.ts, self.model, self.key_fp, self.attempts, self.status, round(self.latency_ms, 2),
                self.prompt_tokens, self.completion_tokens, self.client_ip, int(self.stream), self.error, self.client)


class RequestLog:
    def __init__(self, max_pending: int = 100_000):
        self.max_pending = max_pending
        self._rows: list[RequestRow] = []
        self.dropped = 0

    def add(self, row: RequestRow) -> None:
        if len(self._rows) >= self.max_pending:  # the database is not keeping up: keep memory bounded
            self._rows.pop(0)
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("request log backlog full: %d rows dropped so far", self.dropped)
        self._rows.append(row)

    def drain(self) -> list[RequestRow]:
        rows, self._rows = self._rows, []
        return rows

    def __len__(self) -> int:
        return len(self._rows)
