"""Waiting for an event without making time a sequence point: poll until the condition holds, with a deadline
far beyond anything a healthy run needs (it only turns a hang into a failure)."""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str = "the condition", timeout: float = 30.0) -> T:
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def raw_request(port: int, head: str, body: bytes = b"", *, source: str = "127.0.0.1",
                timeout: float = 30.0) -> tuple[int, bytes, socket.socket]:
    """Send a request head (and maybe part of a body) on a fresh socket; read the status line and what follows
    until the server stops sending or closes. → (status, bytes read, the socket, still open)."""
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(head.encode("latin-1") + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data, s


def closed_by_peer(s: socket.socket, timeout: float = 30.0) -> bool:
    """Wait until the other side closes `s` (True), or `timeout` passes (False); `s` is closed either way."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        s.close()
