"""A real redis-server for the tests: started on a free loopback port with its own data directory, stopped
(and restartable, with its persistence) by the test. The Debian package is installed by .ci/run."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .wait import wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def available() -> bool:
    return Path(REDIS_SERVER).exists()


def require() -> None:
    """Skip the calling test when redis-server is missing, except where it must be there (.ci/run sets
    KEYLOOM_REQUIRE_REDIS=1, and CI is set in CI): then fail, so Redis tests never pass by not running."""
    if available():
        return
    import pytest
    if os.environ.get("KEYLOOM_REQUIRE_REDIS") or os.environ.get("CI"):
        pytest.fail(f"redis-server is required here (KEYLOOM_REQUIRE_REDIS/CI) but {REDIS_SERVER} is missing: "
                    "apt-get install redis-server")
    pytest.skip("redis-server is not installed (apt-get install redis-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, password: str | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no",
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, "redis-server to answer", timeout=30)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: the append-only file is complete)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def flush(self) -> None:
        import redis
        r = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        try:
            r.flushall()
        finally:
            r.close()

    def sync_client(self):  # type: ignore[no-untyped-def]
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def until_down(port: int) -> None:
    """Wait until nothing answers on the port (after stop/kill)."""
    def closed() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return False
        except OSError:
            return True
    wait_until(closed, "redis-server to stop")
    time.sleep(0)  # yield

