"""A stop always ends (server/shutdown.py): a closing step that never ends is named, left, and the steps after it
still run; the counters are written, the database closed and DATA_DIR given up."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from typing import Any

import pytest

from server import app as app_module
from server.shutdown import MIN_STEP, OVERRAN, Steps, settle, threads_left, where
from server.store.db import DB_FILE
from server.store.lock import DataDirBusy, DataDirLock
from tests.support.loop import LoopThread


async def _deaf(release: asyncio.Event, entered: list[str]) -> None:
    """A step that ignores being cancelled until `release` is set (what a stuck library call looks like)."""
    entered.append("in")
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            entered.append("cancelled, ignored")


def test_a_step_that_ignores_its_cancellation_is_named_and_left(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[Any, bool, list[str], list[str]]:
        release, entered = asyncio.Event(), []
        steps = Steps()
        after: list[str] = []
        quick = await steps.run("a quick step", asyncio.sleep(0, result="done"), 5)
        stuck = await steps.run("the stuck step", _deaf(release, entered), 0.01)
        after.append("the next step ran")
        left = steps.leftovers
        release.set()
        await asyncio.gather(*steps.left)
        return (quick, stuck), left, entered, after

    with caplog.at_level(logging.WARNING, logger="keyloom"):
        results, left, entered, after = asyncio.run(scenario())
    assert results == ("done", None) and left is True
    assert entered == ["in", "cancelled, ignored"] and after == ["the next step ran"]
    lines = [r.getMessage() for r in caplog.records if OVERRAN in r.getMessage()]
    assert len(lines) == 1 and "the stuck step" in lines[0] and "_deaf (test_stop_bounded.py:" in lines[0], lines


def test_a_failing_step_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise ValueError("the step's own failure")

    async def scenario() -> list[Any]:
        steps = Steps()
        return [await steps.run("a failing step", boom(), 5), await steps.run("the next", asyncio.sleep(0, 7), 5),
                steps.leftovers]

    with caplog.at_level(logging.ERROR, logger="keyloom"):
        assert asyncio.run(scenario()) == [None, 7, False]
    [record] = [r for r in caplog.records if "a failing step failed" in r.getMessage()]
    assert record.exc_info is not None and "the step's own failure" in str(record.exc_info[1])


def test_the_steps_share_one_budget_and_each_still_gets_a_moment(caplog: pytest.LogCaptureFixture) -> None:
    """The allowances together stay within the budget (server/workers.py kills a worker after it): past the
    budget a step gets MIN_STEP, not its own allowance. The clock is the test's."""
    now = [100.0]

    async def scenario() -> None:
        release, entered = asyncio.Event(), []
        steps = Steps(budget=25.0, monotonic=lambda: now[0])
        now[0] += 24.99  # what earlier steps took
        await steps.run("a late step", _deaf(release, entered), 10.0)
        release.set()
        await asyncio.gather(*steps.left)

    with caplog.at_level(logging.WARNING, logger="keyloom"):
        asyncio.run(scenario())
    [line] = [r.getMessage() for r in caplog.records if OVERRAN in r.getMessage()]
    assert f"a late step {OVERRAN} {MIN_STEP:g}s" in line, line


def test_settle_cancels_what_is_left_and_names_what_will_not_end(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, bool, list[str]]:
        release, entered = asyncio.Event(), []
        polite = asyncio.ensure_future(asyncio.Event().wait())
        deaf = asyncio.ensure_future(_deaf(release, entered))
        await asyncio.sleep(0)
        settled = await settle(0.05)
        result = settled, polite.cancelled(), entered
        release.set()
        await deaf
        return result

    with caplog.at_level(logging.WARNING, logger="keyloom"):
        settled, polite_cancelled, entered = asyncio.run(scenario())
    assert settled is False and polite_cancelled and entered == ["in", "cancelled, ignored"]
    [line] = [r.getMessage() for r in caplog.records if OVERRAN in r.getMessage()]
    assert "the tasks still running" in line and "_deaf" in line, line

    async def nothing_left() -> bool:
        asyncio.ensure_future(asyncio.Event().wait())
        await asyncio.sleep(0)
        return await settle(5)
    assert asyncio.run(nothing_left()) is True


def test_threads_left_names_a_thread_that_would_hold_the_exit() -> None:
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="a-stuck-thread")
    t.start()
    try:
        assert "a-stuck-thread" in threads_left(0.01)
    finally:
        release.set()
        t.join(30)
    assert "a-stuck-thread" not in threads_left(0.01)


def test_where_names_the_chain_of_awaits() -> None:
    async def inner(ev: asyncio.Event) -> None:
        await ev.wait()

    async def outer(ev: asyncio.Event) -> None:
        await inner(ev)

    async def through_a_gather(ev: asyncio.Event) -> None:  # as RedisBackend.close waited for its listener
        await asyncio.gather(asyncio.ensure_future(outer(ev)))

    async def scenario() -> str:
        ev = asyncio.Event()
        task = asyncio.ensure_future(through_a_gather(ev))
        for _ in range(3):  # the gather's child starts on a later turn
            await asyncio.sleep(0)
        text = where(task)
        ev.set()
        await task
        return text

    text = asyncio.run(scenario())
    assert text.index("through_a_gather") < text.index("outer") < text.index("inner") < text.index("Event.wait"), text


def test_a_stuck_closing_step_does_not_hold_the_stop_and_the_rest_still_runs(
        start_keyloom: Any, loop_thread: LoopThread, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    running = start_keyloom()
    kl = running.kl
    with running.http() as h:
        assert h.post("/v1/chat/completions", headers=running.auth(), json={
            "model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    release = loop_thread.run(_event())
    entered: list[str] = []
    real_close = kl.alerts.close
    monkeypatch.setattr(kl.alerts, "close", lambda: _deaf(release, entered))
    monkeypatch.setattr(app_module, "STEP_WITHIN", 0.05)
    with caplog.at_level(logging.WARNING, logger="keyloom"):
        clean = loop_thread.run(kl.stop(0))
    try:
        assert clean is False and entered[0] == "in"
        lines = [r.getMessage() for r in caplog.records if OVERRAN in r.getMessage()]
        assert len(lines) == 1 and "closing the alerts" in lines[0], lines
        # what came after the stuck step ran: the counts are in the database, which is closed
        assert kl.db._conn is None
        with sqlite3.connect(kl.data_dir / DB_FILE) as con:
            assert con.execute("SELECT COALESCE(SUM(requests), 0) FROM key_usage").fetchone()[0] == 1
        # DATA_DIR stays taken while something of this stop may still write: the process's exit frees it
        with pytest.raises(DataDirBusy):
            DataDirLock(kl.data_dir).acquire()
    finally:
        loop_thread.call(release.set)
        monkeypatch.setattr(kl.alerts, "close", real_close)


async def _event() -> asyncio.Event:
    return asyncio.Event()
