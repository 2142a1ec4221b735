"""Bounded steps for a stop that always ends.

Why: a graceful stop awaits many things in turn: background tasks, the key checks, the dispatcher, the last write
of the counters, Redis's connections, the HTTP clients. If one of them never ends (a client library stuck on a
connection its server dropped and took back, a task that swallows its cancellation) the process would stay up
after SIGTERM until its orchestrator kills it, and every later step (the last write among them) would never run.
So each step gets its own allowance; a step that overruns it is named in one log line together with where it was
waiting (function names and lines, never values: nothing secret can be in it), left behind, and the stop goes
on. `leftovers` then says whether anything was left, so `server.main` can exit instead of waiting for it again.

A stop that overran is a defect to look at, not a normal path: the allowances are far above what each step takes
(milliseconds), and the tests fail on the log line.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger("keyloom")

# what "has not ended" is recognised by (tests look for it)
OVERRAN = "has not ended within"
# Seconds each closing step may take (each takes milliseconds when well), and the last write of the counters
# (one batch to SQLite or Redis; on Redis that can include a reconnection: connect 2 s, replies 5 s).
STEP_WITHIN = 10.0
LAST_WRITE_WITHIN = 30.0


def where(task: asyncio.Future[Any]) -> str:
    """The chain of coroutines `task` is suspended in, outermost first: `name (file:line) → …`."""
    coro: Any = task.get_coro() if isinstance(task, asyncio.Task) else None
    parts: list[str] = []
    while coro is not None and len(parts) < 16:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        parts.append(f"{getattr(code, 'co_qualname', code.co_name)} ({code.co_filename.rsplit('/', 1)[-1]}:"
                     f"{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " → ".join(parts) or "unknown"


class Steps:
    """Runs a stop's steps one after another, each within its allowance; remembers what it had to leave."""

    def __init__(self) -> None:
        self.left: list[asyncio.Future[Any]] = []

    async def run(self, what: str, step: Awaitable[Any], within: float) -> Any:
        """`step`'s result, or None if it overran `within` seconds (said once, the step cancelled and left).
        An exception from the step is the caller's, as if it had been awaited directly."""
        task = asyncio.ensure_future(step)
        done, _ = await asyncio.wait({task}, timeout=within)
        if task in done:
            return task.result()
        log.warning("stopping: %s %s %gs; going on without it (it waits in %s)", what, OVERRAN, within, where(task))
        task.cancel()  # asked, not awaited: a step that ignores it must not hold the stop again
        self.left.append(task)
        return None

    async def cancel(self, what: str, tasks: Iterable[asyncio.Future[Any]], within: float) -> None:
        """Cancel `tasks` and give them `within` seconds to end; name each one that did not, and leave it."""
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=within)
        for t in still:
            log.warning("stopping: one of %s %s %gs of its cancellation; going on without it (it waits in %s)",
                        what, OVERRAN, within, where(t))
            self.left.append(t)

    @property
    def leftovers(self) -> bool:
        return any(not t.done() for t in self.left)
