"""Failed sign-ins per client IP: a few are forgiven, then the IP waits for the window to pass.

Wrong passwords on the login form, on the export re-ask and in a script's Bearer header all
count, so the admin password cannot be guessed faster through any door.
"""
from __future__ import annotations

import collections
import math
from typing import Callable

from ..clock import Clock

WINDOW = 15 * 60.0
MAX_TRACKED = 10_000


class LoginThrottle:
    def __init__(self, clock: Clock, attempts: Callable[[], int]):
        self.clock = clock
        self.attempts = attempts
        self._failures: dict[str, collections.deque[float]] = {}

    def _window(self, ip: str) -> collections.deque[float] | None:
        q = self._failures.get(ip)
        if q is None:
            return None
        cutoff = self.clock.monotonic() - WINDOW
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._failures[ip]
            return None
        return q

    def retry_after(self, ip: str) -> int:
        """Seconds this IP must wait before trying a password again; 0 when it may try now."""
        q = self._window(ip)
        if q is None or len(q) < self.attempts():
            return 0
        return max(1, math.ceil(q[-self.attempts()] + WINDOW - self.clock.monotonic()))

    def failed(self, ip: str) -> None:
        if ip not in self._failures and len(self._failures) >= MAX_TRACKED:
            oldest = min(self._failures, key=lambda k: self._failures[k][-1])
            del self._failures[oldest]
        self._failures.setdefault(ip, collections.deque(maxlen=1000)).append(self.clock.monotonic())

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)
