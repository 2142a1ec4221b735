"""The key pool: which keys exist, which are usable, which one serves the next attempt.

The pool owns every key's state. Keys are held as `Key` objects whose repr and
str are masked; the secret is read only where a request is sent upstream.
Selection rotates over usable keys, and within one request prefers keys it has
not tried yet (and never re-tries a key the request was told to avoid).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Iterable

from ..clock import Clock
from ..redact import fingerprint, mask


@dataclass(eq=False)
class Key:
    secret: str = field(repr=False)
    fp: str = ""
    masked: str = ""
    disabled_reason: str | None = None
    disabled_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    successes: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        self.fp = self.fp or fingerprint(self.secret)
        self.masked = self.masked or mask(self.secret)

    def __repr__(self) -> str:
        return f"Key({self.masked}, {self.fp})"

    __str__ = __repr__

    @property
    def usable(self) -> bool:
        return self.disabled_reason is None


def valid_key_text(secret: str) -> bool:
    """A key goes into an HTTP header: printable ASCII without spaces, nothing else."""
    return 8 <= len(secret) <= 512 and all(33 <= ord(ch) < 127 for ch in secret)


class KeyPool:
    def __init__(self, secrets: Iterable[str], clock: Clock):
        self.clock = clock
        self.keys: list[Key] = []
        self._by_fp: dict[str, Key] = {}
        self.rejected = 0  # configured values that cannot be keys (never logged)
        self._next = 0
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> Key | None:
        if not valid_key_text(secret):
            self.rejected += 1
            return None
        key = Key(secret)
        if key.fp in self._by_fp:
            return self._by_fp[key.fp]
        self.keys.append(key)
        self._by_fp[key.fp] = key
        return key

    def get(self, fp: str) -> Key | None:
        return self._by_fp.get(fp)

    def secrets(self) -> list[str]:
        return [k.secret for k in self.keys]

    def pick(self, model: str, avoid: Collection[str] = (), tried: Collection[str] = ()) -> Key | None:
        """The next usable key for `model`: untried keys first, never one in `avoid` (fingerprints)."""
        n = len(self.keys)
        fallback: Key | None = None
        for step in range(n):
            key = self.keys[(self._next + step) % n]
            if not key.usable or key.fp in avoid:
                continue
            if key.fp in tried:
                fallback = fallback or key
                continue
            self._next = (self._next + step + 1) % n
            return key
        return fallback

    def record_success(self, key: Key, model: str) -> None:
        key.successes += 1

    def record_failure(self, key: Key, model: str, message: str, disable: bool) -> None:
        now = self.clock.time()
        key.failures += 1
        key.last_error = message
        key.last_error_at = now
        if disable and key.disabled_reason is None:
            key.disabled_reason = message
            key.disabled_at = now

    def counts(self) -> dict[str, int]:
        disabled = sum(1 for k in self.keys if not k.usable)
        return {"total": len(self.keys), "active": len(self.keys) - disabled, "disabled": disabled}
