"""Keys out for reasons that can pass are asked again on a schedule, and come back by themselves.

Every KEY_RECHECK_MINUTES, each key that is out of rotation for a reason that can pass is checked with a
call that spends no generation quota (one page of the model list, as the dashboard's key test does):

- a key disabled because the Generative Language API is not enabled in its project (SERVICE_DISABLED) or
  the key may not call it (API_KEY_SERVICE_BLOCKED) comes back as soon as Google accepts it: the owner
  fixed it in Google's console and need not also revive it here;
- a key exhausted for today (or parked with its project) is checked too: a key that has meanwhile become
  invalid, suspended or leaked is taken out now rather than at the next quota day, when it would fail a
  client's request. Whether a daily generation quota is back no free call can tell, so exhaustion itself
  ends with the quota day (this timer rolls the day over even when no request comes).

An invalid, suspended or leaked key is never re-checked: it stays out until its owner acts. Nothing here runs
on the request path; the checks are few (a key at most once per interval) and one at a time.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tornado.ioloop import PeriodicCallback

from ..clock import Clock
from ..upstream.failures import UpstreamFailure
from .keys import Key, KeyPool
from .policy import KeyEffect, verdict

log = logging.getLogger("keyloom.recheck")


def passable(reason: str | None) -> bool:
    """Can the reason a key was disabled for pass without its owner acting on Keyloom? Reasons read
    "Kind: message" (dispatch.py, admin/keytest.py): only a KeySuspended that is not a suspension or a leak
    (the API disabled in the project, the key blocked from the API) can."""
    if not reason:
        return False
    kind, _, text = reason.partition(":")
    if kind.strip() != "KeySuspended":
        return False
    lower = text.lower()
    return "suspended" not in lower and "leaked" not in lower


class Rechecker:
    def __init__(self, pool: KeyPool, client_for: Callable[[Key], Any], interval: Callable[[], float], clock: Clock,
                 redact: Callable[[str], str], poll: float = 1.0):
        """`interval()`: seconds between checks of one key (KEY_RECHECK_MINUTES × 60; 0: off). `poll`: how often
        the timer looks for keys that are due (cheap: a few comparisons per key)."""
        self.pool = pool
        self.client_for = client_for
        self.interval = interval
        self.clock = clock
        self.redact = redact
        self.poll = poll
        self.seen: dict[str, float] = {}  # fp → when it was last checked (or found out of rotation)
        self.checks = 0
        self.revived = 0
        self._callback: PeriodicCallback | None = None
        self._running: asyncio.Task[Any] | None = None

    def wants(self, key: Key) -> bool:
        if key.disabled_reason is not None:
            return passable(key.disabled_reason)
        return any(ms.exhausted_day == self.pool.day for ms in key.models.values())

    def due(self) -> list[Key]:
        """The keys whose next check has come."""
        interval = self.interval()
        if interval <= 0:
            return []
        now = self.clock.time()
        out = []
        for key in list(self.pool.keys):
            if not self.wants(key):
                self.seen.pop(key.fp, None)
                continue
            since = self.seen.setdefault(key.fp, key.disabled_at if key.disabled_reason and key.disabled_at
                                         else now)
            if now - since >= interval:
                out.append(key)
        return out

    async def run_due(self) -> int:
        """Check every key that is due, one at a time; returns how many were checked."""
        self.pool.check_day()  # exhaustion ends with the quota day, even when no request comes to notice it
        keys = self.due()
        for key in keys:
            await self.check(key)
        return len(keys)

    async def check(self, key: Key) -> bool:
        """Ask Google whether it accepts the key (no generation quota spent); True when it does."""
        self.seen[key.fp] = self.clock.time()
        self.checks += 1
        try:
            await self.client_for(key).check_key(key.secret)
        except UpstreamFailure as f:
            self.pool.learn(key, "", f)
            message = self.redact(" ".join(f.message.split()))
            self.pool.note_error(key, f"{f.kind}: {message}")
            if verdict(f).key is KeyEffect.DISABLE and key.usable:
                log.warning("key %s taken out of rotation at its re-check: %s: %s", key, f.kind, message)
                self.pool.disable(key, f"{f.kind}: {message}")
            return False
        except Exception as e:  # a re-check never breaks the timer
            log.info("re-check of key %s failed: %s", key, self.redact(str(e)))
            return False
        if key.disabled_reason is not None and passable(key.disabled_reason):
            log.info("key %s is accepted by Google again: back in rotation (it was out: %s)", key,
                     self.redact(key.disabled_reason))
            self.pool.enable(key)
            self.revived += 1
        return True

    def _on_timer(self) -> None:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        try:
            await self.run_due()
        except Exception:
            log.exception("re-checking keys failed; will try again")

    def start(self) -> None:
        self._callback = PeriodicCallback(self._on_timer, self.poll * 1000)
        self._callback.start()

    async def stop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        if self._running is not None and not self._running.done():
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
