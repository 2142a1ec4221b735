"""Time as an injected dependency, so quota days, cooldowns and timeouts are testable without sleeping."""
from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations)."""


class SystemClock:
    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)


class ManualClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: float = 1_750_000_000.0):
        self._wall = start
        self._mono = 1000.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds


class OffsetClock:
    """The system clock moved by a fixed offset (`run.py --clock-offset`, for tests of day roll-over)."""

    def __init__(self, offset: float):
        self.offset = offset

    def time(self) -> float:
        return _time.time() + self.offset

    def monotonic(self) -> float:
        return _time.monotonic()
