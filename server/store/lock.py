"""One Keyloom process per DATA_DIR.

Two processes on one SQLite file both start, both count in memory and both write absolute
counts: the last writer wins, half the usage is lost and every daily limit is served twice.
So the process that owns a DATA_DIR holds an exclusive OS lock on `DATA_DIR/keyloom.lock`
for as long as it runs. The operating system drops the lock when the process ends, however
it ends (kill -9 included), so a crash never leaves a stale lock behind; the pid written into
the file is only there to make the refusal message useful.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO

LOCK_FILE = "keyloom.lock"


class DataDirBusy(RuntimeError):
    """Another process holds the lock."""


def _try_lock(f: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class DataDirLock:
    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise DataDirBusy naming the holder. OSError when the file cannot be made."""
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        f = os.fdopen(fd, "r+", encoding="utf-8")
        if not _try_lock(f):
            holder = f.read(32).strip()
            f.close()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise DataDirBusy(f"another Keyloom{who} is already using DATA_DIR {self.path.parent}: two processes on "
                              "one data directory would each count alone and serve daily limits twice. Stop the "
                              "other one, or give this one its own DATA_DIR.")
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()  # closing the descriptor drops the lock

    @property
    def held(self) -> bool:
        return self._file is not None
