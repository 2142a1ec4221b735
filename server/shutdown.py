"""Bounded steps for a stop that always ends.

Why: a graceful stop awaits many things in turn: background tasks, the key checks, the dispatcher, the last write
of the counters, Redis's connections, the HTTP clients, and then whatever asyncio itself waits for (tasks still
running, the default executor's threads). If one of them never ends (a client library stuck on a connection its
server dropped and took back, a task that swallows its cancellation) the process would stay up after SIGTERM until
its orchestrator kills it, and every later step (the last write among them) would never run. So:

- each step gets its own allowance, all of them together one budget (CLOSING_BUDGET, which server/workers.py's
  kill of a stubborn worker leaves room for); a step that overruns is named in one log line together with where
  it waits (its chain of awaits: function names, files and lines, never values, so nothing secret can be in
  it), cancelled and left, and the stop goes on; a step that fails is logged and the stop goes on too;
- `settle` then gives what is left on the loop a bounded moment, and `threads_left` the threads that would hold
  the interpreter open; if anything is still there, `exit_now` ends the process (server/main.py) instead of
  letting asyncio or the interpreter wait for it again.

A stop that overran is a defect to look at, not a normal path: the allowances are far above what each step takes
(milliseconds), and the tests fail on the log line.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger("keyloom")

# what "has not ended" is recognised by (tests look for it)
OVERRAN = "has not ended within"
# Seconds each closing step may take (each takes milliseconds when well), and the last write of the counters
# (one batch to SQLite or Redis; on Redis that can include reconnecting: connect 2 s, replies 5 s, retried).
STEP_WITHIN = 10.0
LAST_WRITE_WITHIN = 20.0
# all closing steps together; a step never gets less than MIN_STEP, so the ones after an overrun still try
CLOSING_BUDGET = 25.0
MIN_STEP = 0.5
# what is left on the loop after the steps (requests past the grace, untracked tasks, the executor's threads)
SETTLE_WITHIN = 3.0
# how long a stop may take beyond SHUTDOWN_GRACE, all of the above included (server/workers.py kills after it)
STOP_BEYOND_GRACE = CLOSING_BUDGET + SETTLE_WITHIN + 2.0


def where(task: asyncio.Future[Any]) -> str:
    """The chain of coroutines `task` is suspended in, outermost first: `name (file:line) → …`; through a
    `gather`, into its first child still pending, and through a task awaited directly, into that task."""
    parts: list[str] = []
    fut: Any = task
    seen: set[int] = set()
    while isinstance(fut, asyncio.Task) and id(fut) not in seen and len(parts) < 24:
        seen.add(id(fut))
        coro: Any = fut.get_coro()
        while coro is not None and len(parts) < 24:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is None:
                break
            code = frame.f_code
            parts.append(f"{getattr(code, 'co_qualname', code.co_name)} ({code.co_filename.rsplit('/', 1)[-1]}:"
                         f"{frame.f_lineno})")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        # what the task waits on (asyncio's own attributes): a task, or a gather whose children are kept
        waiter = getattr(fut, "_fut_waiter", None)
        pending = [c for c in getattr(waiter, "_children", None) or () if not c.done()]
        fut = pending[0] if pending else waiter
    return " → ".join(parts) or "unknown"


def _seen(task: asyncio.Future[Any]) -> None:
    """Mark a left or cancelled task's outcome as read: a stop that went on without it has said what it had to."""
    if not task.cancelled():
        task.exception()


class Steps:
    """Runs a stop's steps one after another, each within its allowance and all within one budget; remembers what
    it had to leave."""

    def __init__(self, budget: float = CLOSING_BUDGET, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.left: list[asyncio.Future[Any]] = []
        self._monotonic = monotonic
        self._deadline = monotonic() + budget

    def _allowance(self, within: float) -> float:
        return max(MIN_STEP, min(within, self._deadline - self._monotonic()))

    async def run(self, what: str, step: Awaitable[Any], within: float) -> Any:
        """`step`'s result; None if it failed (logged) or overran its allowance (said once, the step cancelled
        and left). Nothing a step does stops the steps after it."""
        task = asyncio.ensure_future(step)
        allowed = self._allowance(within)
        done, _ = await asyncio.wait({task}, timeout=allowed)
        if task in done:
            if task.cancelled():
                log.warning("stopping: %s was cancelled", what)
                return None
            error = task.exception()
            if error is not None:
                log.error("stopping: %s failed", what, exc_info=error)
                return None
            return task.result()
        task.cancel()  # asked, not awaited: a step that ignores it must not hold the stop again
        self._leave(task, f"{what} {OVERRAN} {allowed:g}s")
        return None

    async def cancel(self, what: str, tasks: Iterable[asyncio.Future[Any]], within: float) -> None:
        """Cancel `tasks` and give them `within` seconds to end; name each one that did not, and leave it."""
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.add_done_callback(_seen)
            t.cancel()
        if not pending:
            return
        allowed = self._allowance(within)
        _, still = await asyncio.wait(pending, timeout=allowed)
        for t in still:
            self._leave(t, f"one of {what} {OVERRAN} {allowed:g}s of its cancellation")

    def _leave(self, task: asyncio.Future[Any], said: str) -> None:
        log.warning("stopping: %s; going on without it (it waits in %s)", said, where(task))
        task.add_done_callback(_seen)
        self.left.append(task)

    @property
    def leftovers(self) -> bool:
        return any(not t.done() for t in self.left)


async def settle(within: float = SETTLE_WITHIN) -> bool:
    """After the steps: cancel every other task on this loop and shut the default executor down, within `within`
    seconds. → False (each named) if something did not end: asyncio.run would wait for it without limit."""
    steps = Steps(budget=within)
    others = asyncio.all_tasks() - {asyncio.current_task()}
    await steps.cancel("the tasks still running", others, within)
    loop = asyncio.get_running_loop()
    await steps.run("the executor's threads", loop.shutdown_default_executor(), within)
    return not steps.leftovers


def threads_left(within: float = 2.0) -> list[str]:
    """Threads that would keep the interpreter from exiting, after giving each up to `within` seconds."""
    end = time.monotonic() + within
    names = []
    for t in threading.enumerate():
        if t.daemon or t is threading.main_thread():
            continue
        t.join(max(0.0, end - time.monotonic()))
        if t.is_alive():
            names.append(t.name)
    return names


def exit_now(code: int) -> None:
    """End the process at once (what could be written has been), after the log and the output are out."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
