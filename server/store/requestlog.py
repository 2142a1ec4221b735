"""The request log's in-memory side: rows wait here until the next flush writes them in a batch."""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("keyloom.requestlog")


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

    def as_tuple(self) -> tuple:
        return (self.ts, self.model, self.key_fp, self.attempts, self.status, round(self.latency_ms, 2),
                self.prompt_tokens, self.completion_tokens, self.client_ip, int(self.stream), self.error)


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

    def restore(self, rows: list[RequestRow]) -> None:
        self._rows[:0] = rows[-self.max_pending:]
        del self._rows[self.max_pending:]

    def __len__(self) -> int:
        return len(self._rows)
