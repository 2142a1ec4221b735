"""WORKERS=N: N Keyloom processes on one machine serving one port (a pre-fork with SO_REUSEPORT).

Why processes and not threads: one Python process serves on one core; a second core only helps through a
second interpreter. Why SO_REUSEPORT and not one shared listening socket: the kernel then spreads new
connections over the workers' own sockets, where one shared socket would wake every worker for each
connection and let the busiest one take most of them.

Why only with REDIS_URL: each worker counts in memory; on SQLite each would count alone and write its own
absolute counts, so half the usage would be lost and every daily limit served N times. Through Redis the
workers act as one pool, exactly as replicas on several machines do.

The parent (this module's `Supervisor`) does what must happen once, before forking: settings are parsed,
the generated passwords are created in DATA_DIR (so every worker agrees on them), DATA_DIR is locked (so no
other Keyloom takes it), and the port is tried once *without* SO_REUSEPORT, so a port in use (by anything,
including another Keyloom's workers, which would otherwise silently share it) stops start-up with one clear
line. Then it forks the workers and only supervises:

- start-up: each worker reports on a pipe once it serves. A worker that exits before the whole group has
  reported fails the start: the others are stopped and the parent exits with the worker's status (2 for
  Keyloom's "cannot start"), never looping on a cause that will not go away;
- running: a worker that dies is replaced (the first replacement at once, then after 1, 2, 4 … up to 30 s
  while replacements keep dying before they serve); if every worker is dead and each slot failed
  MAX_FAILS times in a row, the parent gives up with status 1;
- SIGTERM/SIGINT: every worker gets SIGTERM (each stops as a single Keyloom does: no new connections, the
  requests in flight finish within SHUTDOWN_GRACE, counts written), the parent waits for all of them (and
  kills what is still there SHUTDOWN_GRACE + 30 s later: a worker's own stop is bounded within that, see
  server/shutdown.py), then exits 0;
- the parent dying by kill -9: on Linux each worker is sent SIGTERM by the kernel (PR_SET_PDEATHSIG), so no
  orphan keeps serving.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .shutdown import STOP_BEYOND_GRACE
from .store.lock import DataDirLock

log = logging.getLogger("keyloom.workers")

MAX_FAILS = 5          # consecutive replacements of one slot that died before serving, when none is alive
MAX_BACKOFF = 30.0     # seconds, at most, between two replacements of one slot
STOP_EXTRA = STOP_BEYOND_GRACE  # seconds beyond SHUTDOWN_GRACE before a worker that will not stop is killed


def requires_redis(workers: int, redis_url: str) -> str | None:
    """The one line refusing WORKERS>1 without REDIS_URL, or None when the combination is allowed."""
    if workers <= 1 or redis_url:
        return None
    return (f"Keyloom cannot start: WORKERS={workers} needs REDIS_URL. Several processes share one pool only "
            "through Redis; on SQLite each would count alone and serve every daily limit several times. Set "
            "REDIS_URL (see the README, \"Several processes and replicas\"), or set WORKERS=1.\n")


class HeldByParent(DataDirLock):
    """A worker's DATA_DIR lock: the parent took it for the whole group before forking, so workers (which
    share DATA_DIR by design) neither take nor release it."""

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


class _WorkerTag(logging.Filter):
    """Names the worker in each log line ("keyloom[w1]: …"): N workers write into one log."""

    def __init__(self, worker: int):
        super().__init__()
        self.suffix = f"[w{worker}]"

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.endswith(self.suffix):
            record.name += self.suffix
        return True


def tag_log(worker: int) -> None:
    """In a worker: tag every line its log handlers write with the worker's number."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(worker))


def _die_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when its parent dies, however it dies."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


@dataclass
class _Slot:
    number: int
    pid: int = 0
    ready: bool = False
    fails: int = 0            # consecutive deaths before serving
    restart_at: float = 0.0   # monotonic time of the next start, while pid == 0
    last_status: int = 0


@dataclass
class Supervisor:
    """Forks `count` workers, each running `child(number, on_ready)` (which returns an exit status), and
    supervises them; `run()` returns the parent's exit status."""
    count: int
    child: Callable[[int, Callable[[], None]], int]
    grace: float
    slots: list[_Slot] = field(default_factory=list)

    def run(self) -> int:
        self._ready_r, self._ready_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._ready_r, self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._stopping = False
        self._buf = b""
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1)}
        for s in old:
            signal.signal(s, self._on_signal)
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            self.slots = [_Slot(n) for n in range(self.count)]
            for slot in self.slots:
                self._start(slot)
            status = self._starting()
            if status is None:
                log.info("%d workers serving (pids %s)", self.count, ", ".join(str(s.pid) for s in self.slots))
                status = self._running()
            return self._stop_all(status)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old.items():
                signal.signal(s, h)
            for fd in (self._ready_r, self._ready_w, self._wake_r, self._wake_w):
                os.close(fd)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGUSR1:  # README: every thread's stack to the log; here, and each worker its own
            faulthandler.dump_traceback(all_threads=True)
            self._signal_all(signal.SIGUSR1)
            return
        if signum in (signal.SIGTERM, signal.SIGINT) and not self._stopping:
            self._stopping = True
            log.info("stopping: %s to each worker", signal.Signals(signal.SIGTERM).name)
            self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid:
                try:
                    os.kill(slot.pid, sig)
                except ProcessLookupError:
                    pass

    # -- the worker side ------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid:
            slot.pid, slot.ready = pid, False
            return
        # the worker: forget the parent's signal plumbing, die with the parent, serve, report the status
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(s, signal.SIG_DFL)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the worker's own (server/main.py) is set
            for fd in (self._ready_r, self._wake_r, self._wake_w):
                os.close(fd)
            _die_with_parent()
            if os.getppid() != parent:  # the parent died before the line above took effect
                os._exit(1)
            ready_w = self._ready_w

            def on_ready() -> None:
                os.write(ready_w, f"{slot.number}\n".encode())

            status = self.child(slot.number, on_ready)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException:
            logging.getLogger("keyloom").exception("worker %d failed", slot.number)
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)

    # -- the parent side ------------------------------------------------------------------------

    def _wait(self, timeout: float) -> None:
        """Sleep until a worker reports, a signal arrives (a worker died, or we are told to stop) or `timeout`."""
        try:
            r, _, _ = select.select([self._ready_r, self._wake_r], [], [], max(0.0, timeout))
        except InterruptedError:  # pragma: no cover - PEP 475 retries; the wake-up fd answers instead
            return
        if self._wake_r in r:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if self._ready_r in r:
            try:
                self._buf += os.read(self._ready_r, 4096)
            except BlockingIOError:
                pass
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                if line.strip().isdigit() and int(line) < len(self.slots):
                    slot = self.slots[int(line)]
                    slot.ready, slot.fails = True, 0

    def _reap(self) -> list[_Slot]:
        """Collect every worker that has ended; → their slots (pid cleared, status kept)."""
        dead = []
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for slot in self.slots:
                if slot.pid == pid:
                    slot.pid = 0
                    slot.last_status = os.waitstatus_to_exitcode(raw)
                    dead.append(slot)
        return dead

    def _starting(self) -> int | None:
        """Until every worker serves: None when they all do, else the status to exit with."""
        while not self._stopping:
            for slot in self._reap():
                code = slot.last_status
                log.error("worker %d exited (%s) before it could serve: stopping the others", slot.number,
                          _describe(code))
                return code if code > 0 else 1
            if all(s.ready for s in self.slots):
                return None
            self._wait(1.0)
        return 0

    def _running(self) -> int:
        while not self._stopping:
            now = time.monotonic()
            for slot in self._reap():
                if self._stopping:
                    break
                if not slot.ready:
                    slot.fails += 1
                delay = 0.0 if slot.fails == 0 else min(MAX_BACKOFF, 2.0 ** (slot.fails - 1))
                slot.restart_at = now + delay
                log.warning("worker %d exited (%s); starting a new one%s", slot.number,
                            _describe(slot.last_status), f" in {delay:g}s" if delay else "")
            if self._stopping:
                break
            if all(s.pid == 0 and s.fails >= MAX_FAILS for s in self.slots):
                log.error("every worker keeps exiting before it serves (%d times in a row each): giving up",
                          MAX_FAILS)
                return 1
            waiting = [s for s in self.slots if s.pid == 0]
            for slot in waiting:
                if slot.restart_at <= now:
                    self._start(slot)
            pending = [s.restart_at - now for s in self.slots if s.pid == 0]
            self._wait(min([5.0, *pending]))
        return 0

    def _stop_all(self, status: int) -> int:
        """SIGTERM to every worker still running, wait for all (kill the stubborn ones late), → status."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + STOP_EXTRA
        killed = False
        while any(s.pid for s in self.slots):
            self._reap()
            if not any(s.pid for s in self.slots):
                break
            if not killed and time.monotonic() > deadline:
                log.error("worker(s) %s did not stop within %gs: killing them",
                          ", ".join(str(s.number) for s in self.slots if s.pid), self.grace + STOP_EXTRA)
                self._signal_all(signal.SIGKILL)
                killed = True
            self._wait(0.2)
        failed = [s for s in self.slots if s.last_status not in (0, -signal.SIGTERM)]
        if status == 0 and failed and self._stopping:
            log.warning("worker(s) %s ended with %s", ", ".join(str(s.number) for s in failed),
                        ", ".join(_describe(s.last_status) for s in failed))
        return status


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def try_port(bind: Callable[..., list[socket.socket]], port: int, host: str) -> int:
    """Bind the port once without SO_REUSEPORT (so a port anyone holds, another Keyloom's workers included,
    is refused with Keyloom's own clear line) and let it go again; → the port (the one picked for PORT=0)."""
    sockets = bind(port, host)
    try:
        chosen = sockets[0].getsockname()[1]
    finally:
        for s in sockets:
            s.close()
    return int(chosen)

