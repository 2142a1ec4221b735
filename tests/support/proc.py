"""Keyloom as a real subprocess (`python run.py …`): for start-up, demo, signal and restart tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from server.shutdown import OVERRAN

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KeyloomProcess:
    def __init__(self, *args: str, env: dict[str, str], data_dir: Path):
        port = env.get("PORT", "")
        self.port = int(port) if port.isdigit() else free_port()
        self.data_dir = data_dir
        full_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(data_dir), "LANG": "C.UTF-8",
                    "HOST": "127.0.0.1", "PORT": str(self.port), "DATA_DIR": str(data_dir), "NO_PROXY": "*"}
        full_env.update(env)
        self.proc = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8")
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed once the process has ended its output
            for line in self.proc.stdout:
                self.lines.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 15.0) -> KeyloomProcess:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Keyloom exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"Keyloom did not start:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` and wait for the exit code. A process still there after `timeout` is asked for its threads'
        stacks (SIGUSR1, server/main.py), killed, and the test fails with everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            try:
                self.proc.wait(3)  # time to print the stacks (a stuck stop may also end meanwhile)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
            self._reader.join(5)
            raise AssertionError(f"Keyloom did not end within {timeout:g}s of signal {sig}:\n{self.output()}") from None
        self._reader.join(5)
        if sig in (signal.SIGTERM, signal.SIGINT):  # a graceful stop: every closing step ended in its allowance
            assert OVERRAN not in self.output(), self.output()
        return code

    def password(self) -> str:
        return (self.data_dir / "password").read_text().strip()
