"""ALERT_WEBHOOK_URL: one POST when something needs the owner.

Three events, each raised where it happens by a one-line hook:

- `key_disabled`: Keyloom took a key out of rotation (Google rejected it: invalid, suspended, leaked);
  raised by `KeyPool.disable` (server/pool/keys.py, `on_event`);
- `quota_exhausted`: a model's daily quota is gone on every key (the first key frees up only with the next
  quota day); raised by the dispatcher when a request finds no key for that reason (server/dispatch.py);
- `no_usable_key`: a provider has no usable key left at all (every key disabled, or none configured); raised
  after a disable that took the last one, and by the dispatcher when a request finds none.

Each (event, subject) is sent at most once per ALERT_WEBHOOK_MINUTES (the subject: the key's fingerprint, the
provider and model, the provider). `emit` never waits and never raises: it checks the rate limit, queues the
body and returns; one background task sends the queue, each POST bounded by SEND_TIMEOUT, failures only
logged. A queue longer than MAX_QUEUED drops the newest (an outage of the receiver must not grow memory).

No body ever carries a key: keys appear as their masked form and fingerprint, and the whole body passes
through the redactor before it is queued, in case an upstream message quoted a key.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .clock import Clock
from .settings import Settings

log = logging.getLogger("keyloom.alerts")

SEND_TIMEOUT = 10.0  # seconds per POST, connecting included
MAX_QUEUED = 100     # bodies waiting to be sent; more are dropped (and logged)
MAX_REMEMBERED = 10_000  # (event, subject) pairs whose last send time is kept for the rate limit


class Alerts:
    def __init__(self, settings: Callable[[], Settings], clock: Clock, redact: Callable[[str], str]):
        self.settings = settings
        self.clock = clock
        self.redact = redact
        self._last: dict[tuple[str, str], float] = {}  # (event, subject) → monotonic time of the last send
        self._queue: collections.deque[bytes] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._http: AsyncHTTPClient | None = None
        self.sent = 0       # POSTs the receiver answered 2xx
        self.failed = 0     # POSTs that failed or got another status
        self.dropped = 0    # bodies dropped because the queue was full
        self.suppressed = 0  # events inside their rate-limit window

    def emit(self, event: str, subject: str, message: str, *, key: Any = None, model: str | None = None,
             provider: str | None = None) -> None:
        """Queue one alert, unless ALERT_WEBHOOK_URL is empty or the same (event, subject) was sent within the
        window. `key`: a pool Key (only its masked form and fingerprint are read). Never blocks, never raises."""
        try:
            s = self.settings()
            if not s.ALERT_WEBHOOK_URL:
                return
            now = self.clock.monotonic()
            k = (event, subject)
            last = self._last.get(k)
            if last is not None and now - last < s.ALERT_WEBHOOK_MINUTES * 60:
                self.suppressed += 1
                return
            if len(self._last) >= MAX_REMEMBERED:
                self._forget(now, s.ALERT_WEBHOOK_MINUTES * 60)
            self._last[k] = now
            if len(self._queue) >= MAX_QUEUED:
                self.dropped += 1
                log.warning("alert %s dropped: %d alerts are already waiting to be sent", event, MAX_QUEUED)
                return
            body: dict[str, Any] = {
                "event": event,
                "time": datetime.fromtimestamp(self.clock.time(), UTC).isoformat(timespec="seconds"),
                "key_fingerprint": key.fp if key is not None else None,
                "key_masked": key.masked if key is not None else None,
                "provider": provider or (key.provider if key is not None else None),
                "model": model,
                "message": message,
            }
            body["text"] = body["content"] = message  # Slack/Mattermost read "text", Discord "content"
            self._queue.append(self.redact(ujson.dumps(body, ensure_ascii=False)).encode("utf-8"))
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._drain())
        except Exception:  # an alert must never break the request or the state change that raised it
            log.exception("could not queue alert %s", event)

    def _forget(self, now: float, window: float) -> None:
        for k in [k for k, t in self._last.items() if now - t >= window]:
            del self._last[k]
        while len(self._last) >= MAX_REMEMBERED:
            self._last.pop(next(iter(self._last)))

    async def _drain(self) -> None:
        while self._queue:
            await self._send(self._queue.popleft())

    async def _send(self, body: bytes) -> None:
        url = self.settings().ALERT_WEBHOOK_URL
        if not url:
            return
        where = urlsplit(url).netloc.rpartition("@")[2]  # never the path or credentials: they may be the secret
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True)
        try:
            resp = await self._http.fetch(HTTPRequest(
                url, method="POST", body=body, headers={"Content-Type": "application/json",
                                                        "User-Agent": "Keyloom-alerts"},
                connect_timeout=SEND_TIMEOUT, request_timeout=SEND_TIMEOUT, follow_redirects=False),
                raise_error=False)
        except Exception as e:
            self.failed += 1
            log.warning("alert webhook at %s failed: %s", where, type(e).__name__)
            return
        if 200 <= resp.code < 300:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("alert webhook at %s answered %d", where, resp.code)

    async def close(self) -> None:
        """Stop sending (what is queued is dropped: shutting down must not wait on a slow receiver)."""
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
        if self._http is not None:
            self._http.close()
            self._http = None
