"""Wrong credentials per client, on every door: a few are forgiven, then the client waits.

Every place that takes a credential counts its failures here, in one table: the API's Bearer,
`x-goog-api-key` and `?key=` (OpenAI, Gemini and playground routes), the dashboard's sign-in,
its export re-ask and a script's admin Bearer. So a password cannot be guessed faster through
one door than through another, and a shared chat password does not become an oracle.

A client is an address as `ClientAddresses` resolves it (behind a trusted proxy, the forwarded
one); IPv6 addresses count per /64, because one host is normally given a whole /64 and could
otherwise take a fresh address for every guess.

Memory is bounded at MAX_TRACKED clients. When the table is full, a client still counting (not
locked) gives its place up first, oldest first; a locked client's record is never dropped to make
room, so flooding the table from many addresses cannot unlock one. When every place is held by
a locked client, the failures of clients without a place are counted together in one shared
record, which then locks all of them at once: a flood from tens of thousands of addresses
slows every unknown address down rather than letting any of them guess freely.

The success path costs one dictionary lookup (`retry_after`); a success does not clear a
client's record on the API (an attacker behind the same NAT as a legitimate client must not
have its count reset by the other's traffic).
"""
from __future__ import annotations

import collections
import math
from collections.abc import Callable

from .clock import Clock

WINDOW = 15 * 60.0
MAX_TRACKED = 10_000
OVERFLOW = "*"  # the shared record of clients that found no place in a full table
SCAN = 64


class CredentialThrottle:
    def __init__(self, clock: Clock, attempts: Callable[[], int], max_tracked: int = MAX_TRACKED):
        self.clock = clock
        self.attempts = attempts
        self.max_tracked = max_tracked
        # client → times of its failures within the window, oldest first; dict order = least recently failed first
        self._failures: dict[str, collections.deque[float]] = {}
        self._full = False  # the table is full of locked clients: unknown clients share OVERFLOW
        self.refused = 0    # requests answered 429 (for the dashboard and tests)

    def _live(self, client: str) -> collections.deque[float] | None:
        q = self._failures.get(client)
        if q is None:
            return None
        cutoff = self.clock.monotonic() - WINDOW
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._failures[client]
            self._full = False
            return None
        return q

    def retry_after(self, client: str) -> int:
        """Seconds this client must wait before offering a credential again; 0 when it may try now."""
        q = self._live(client) if client in self._failures else (self._live(OVERFLOW) if self._full else None)
        n = self.attempts()
        if q is None or len(q) < n:
            return 0
        self.refused += 1
        return max(1, math.ceil(q[-n] + WINDOW - self.clock.monotonic()))

    def failed(self, client: str) -> None:
        """Count one wrong credential from `client`."""
        now = self.clock.monotonic()
        q = self._failures.pop(client, None)  # re-inserted below: the most recently failing go last
        if q is None and len(self._failures) >= self.max_tracked and not self._make_room():
            self._full = True
            client = OVERFLOW
            q = self._failures.pop(OVERFLOW, None)
        if q is None:
            q = collections.deque(maxlen=max(1, min(self.attempts(), 1000)))
        q.append(now)
        self._failures[client] = q

    def _make_room(self) -> bool:
        """Free one place: an expired record, else the longest-quiet client that is not locked. Only the
        SCAN longest-quiet records are looked at (the table is ordered by last failure), so a flood costs
        bounded work per failure."""
        n = self.attempts()
        cutoff = self.clock.monotonic() - WINDOW
        victim = None
        for i, (client, q) in enumerate(self._failures.items()):
            if i >= SCAN:
                break
            if client == OVERFLOW:
                continue
            if not q or q[-1] <= cutoff:
                victim = client
                break
            if victim is None and len(q) < n:
                victim = client  # the oldest still-counting client; keep looking for an expired one
        if victim is None:
            return False
        del self._failures[victim]
        return True

    def succeeded(self, client: str) -> None:
        """A right password on a sign-in form: that client starts afresh."""
        self._failures.pop(client, None)

    def __len__(self) -> int:
        return len(self._failures)
