"""Headless Chromium for the page tests: Debian's browser driven by Playwright's Python package (no browser
download), one per test module. The page tests import this module, which skips them where Chromium is missing
(unless KEYLOOM_REQUIRE_BROWSER is set, as in CI, where they fail); the `browser` fixture itself lives in
tests/conftest.py so that no module imports a fixture by name."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
README_SHOTS = Path(__file__).resolve().parent.parent / "screenshots"
# the flags this machine's closed network wants (without the background-networking ones Chromium keeps trying
# Google's hosts), and no sandbox (the tests run as root in CI)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

if not os.path.exists(CHROMIUM):
    if os.environ.get("KEYLOOM_REQUIRE_BROWSER"):
        raise RuntimeError(f"Chromium is required (KEYLOOM_REQUIRE_BROWSER) but {CHROMIUM} does not exist")
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


CLOSE_WITHIN = 60.0  # seconds a Chromium gets to close before the watchdog kills it
TEST_WITHIN = 180.0  # seconds a browser test may take (each takes under 15 here) before the watchdog kills it
DRIVER_WITHIN = 30.0  # then seconds before it kills Playwright's driver too (the close then raises)


def _below(pid: int, name: str) -> list[int]:
    """The processes among `pid`'s descendants whose name holds `name` (read from /proc)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            names[int(d.name)] = stat[stat.index("(") + 1:stat.rindex(")")]
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if name in names.get(child, ""):
                found.append(child)
    return found


class Watchdog:
    """Kills this process's Chromium if `within` seconds pass before `done()`, and Playwright's driver (node)
    DRIVER_WITHIN seconds after that, so a Playwright call that never returns (a close, an evaluate: they have no
    timeout of their own) raises instead of hanging the run. What the main thread was doing when it fired is kept
    in `stuck`, for the failure to show."""

    def __init__(self, within: float) -> None:
        self.stuck: str | None = None
        self._done = threading.Event()
        self._main = threading.main_thread().ident
        self._within = within
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        for name, within in (("chrom", self._within), ("node", DRIVER_WITHIN)):
            if self._done.wait(within):
                return
            if self.stuck is None:
                frame = sys._current_frames().get(self._main or 0)
                self.stuck = "".join(traceback.format_stack(frame)) if frame is not None else "(unknown)"
            for pid in _below(os.getpid(), name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def done(self) -> None:
        self._done.set()
        self._thread.join(5)


def launch() -> Iterator[Any]:
    """The body of the `browser` fixture (tests/conftest.py): one headless Chromium per test module. Each test is
    watched (`watch_test`), and so is the close: a Chromium that does not exit within CLOSE_WITHIN seconds (seen
    in full runs: the module's last test done, the close never returning) is killed, and Playwright's driver
    DRIVER_WITHIN seconds later if the close still has not returned, so a test run can end instead of hanging."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        guard = Watchdog(CLOSE_WITHIN)
        try:
            b.close()
        finally:
            guard.done()


def watch_test() -> Iterator[None]:
    """The body of the autouse `_browser_watch` fixture (tests/conftest.py) for a test that uses `browser`:
    past TEST_WITHIN seconds its Chromium is killed, so the Playwright call it waits in raises, and the test fails
    saying where it was stuck (Playwright's own timeouts cover waits for a page, not a close or an evaluate)."""
    guard = Watchdog(TEST_WITHIN)
    try:
        yield
    finally:
        guard.done()
    if guard.stuck is not None:
        pytest.fail(f"the browser test ran past {TEST_WITHIN:g}s and its Chromium was killed; it was at:\n"
                    f"{guard.stuck}", pytrace=False)


def scroll_into_view(locator: Any, tries: int = 5) -> None:
    """`locator.scroll_into_view_if_needed()`, tried again on a fresh element when the one it found was replaced
    mid-scroll: the dashboard re-renders its tables on each refresh, and Playwright does not retry that case for
    a scroll ("Element is not attached to the DOM", seen in a full run)."""
    for attempt in range(tries):
        try:
            locator.scroll_into_view_if_needed()
            return
        except sync_api.Error as e:
            if "not attached to the DOM" not in str(e) or attempt == tries - 1:
                raise


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=name.endswith("full"))
    # the README's chat pictures come from test_pages_browser.py (a reply of the offline demo)
    if os.environ.get("KEYLOOM_UPDATE_SCREENSHOTS") and name in ("dashboard-desktop", "dashboard-phone"):
        README_SHOTS.mkdir(exist_ok=True)
        shutil.copy(path, README_SHOTS / path.name)
    return path
