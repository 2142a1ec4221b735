"""Server-sent events: framing what we send, decoding what Gemini sends.

Outgoing frames follow what OpenAI clients parse (`data: <one-line JSON>\\n\\n`,
comments as keep-alives, never `event:` or `id:` lines). Incoming Gemini streams
use `\\r\\n\\r\\n` between events, but any of `\\n\\n`, `\\r\\r`, `\\r\\n\\r\\n`
is accepted, as the official SDKs do; an error object sent as bare JSON lines
(not `data:`-prefixed) is returned too.
"""
from __future__ import annotations

from typing import Any

import ujson

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


def json_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Text that cannot be UTF-8 (a lone surrogate a client sent) is escaped instead."""
    try:
        return ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8")
    except UnicodeEncodeError:
        return ujson.dumps(obj, ensure_ascii=True, escape_forward_slashes=False).encode("ascii")


def frame(obj: Any) -> bytes:
    """One `data:` event. ujson never emits raw newlines inside a JSON document, so one line it is."""
    return b"data: " + json_bytes(obj) + b"\n\n"


def frames(objs: list[Any]) -> bytes:
    return b"".join(frame(o) for o in objs)


class SSEDecoder:
    """Incremental SSE decoder: feed bytes as they arrive, get complete event payloads back."""

    def __init__(self, max_event_bytes: int = 64 * 1024 * 1024):
        self._buf = bytearray()
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[str]:
        buf = self._buf
        buf += chunk
        # A chunk may end between the \r and \n of a CRLF: keep that \r until we see what follows.
        held_cr = bool(buf) and buf[-1] == 0x0D
        if held_cr:
            del buf[-1]
        if b"\r" in buf:
            normalized = bytes(buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            buf[:] = normalized
        out: list[str] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            payload = self._event(bytes(buf[start:end]))
            if payload is not None:
                out.append(payload)
            start = end + 2
        if start:
            del buf[:start]
        if held_cr:
            buf.append(0x0D)
        if len(buf) > self._max:
            raise ValueError("an upstream event exceeded the size limit")
        return out

    def close(self) -> tuple[list[str], bool]:
        """End of stream: payloads still buffered (a last event may lack its blank line), and whether
        bytes were left that did not end as a whole event (a truncated stream)."""
        rest = bytes(self._buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._buf.clear()
        blocks = rest.split(b"\n\n")
        tail = blocks.pop().strip(b"\n")
        payloads = [p for p in map(self._event, blocks) if p is not None]
        if tail:
            payload = self._event(tail)
            if payload is not None:
                payloads.append(payload)
        return payloads, bool(tail)

    @staticmethod
    def _event(block: bytes) -> str | None:
        data: list[str] = []
        raw: list[str] = []
        text = block.decode("utf-8", errors="replace")
        for line in text.split("\n"):
            if not line or line.startswith(":"):
                continue
            if line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
            elif line.startswith(("event:", "id:", "retry:")):
                continue
            else:
                raw.append(line)  # a bare JSON error body sent line by line
        if data:
            return "\n".join(data)
        if raw:
            return "\n".join(raw)
        return None
