"""The load generator, run as its own process: `python -m bench.load <scenario> '<json args>'`.

Raw asyncio protocols over keep-alive HTTP/1.1 connections, so that the generator
spends as little CPU as possible on a machine it shares with Keyloom and the fake.
It prints one JSON object with what it measured.
"""
from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any


class HttpConn(asyncio.Protocol):
    """One keep-alive connection, one request at a time; records when each body piece arrived."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Any] | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.head_done = False
        self.length: int | None = None
        self.chunked = False
        self.body = bytearray()
        self.arrivals: list[tuple[float, bytes]] = []
        self.record = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            self.status = int(head.split(" ", 2)[1])
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    self.length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
            self.head_done = True
        if self.chunked:
            while True:
                line_end = self.buf.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(self.buf[:line_end].split(b";")[0], 16)
                if len(self.buf) < line_end + 2 + size + 2:
                    return
                piece = bytes(self.buf[line_end + 2:line_end + 2 + size])
                del self.buf[:line_end + 2 + size + 2]
                if size == 0:
                    self._done()
                    return
                self.body += piece
                if self.record:
                    self.arrivals.append((now, piece))
        else:
            self.body += self.buf
            self.buf.clear()
            if self.length is not None and len(self.body) >= self.length:
                self._done()

    def _done(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.status, bytes(self.body), self.arrivals))

    async def request(self, payload: bytes, record: bool = False) -> tuple[int, bytes, list[tuple[float, bytes]]]:
        self._reset()
        self.record = record
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(payload)
        return await self.waiter


async def connect(host: str, port: int) -> HttpConn:
    _, proto = await asyncio.get_running_loop().create_connection(HttpConn, host, port)
    return proto


def build_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
             "Content-Type: application/json"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sse_text(body: bytes) -> tuple[str, bool, int]:
    """→ (concatenated delta content, whether [DONE] came, number of data events)."""
    text, done, events = [], False, 0
    for block in body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n"):
        if not block.startswith("data: "):
            continue
        data = block[6:]
        if data == "[DONE]":
            done = True
            continue
        events += 1
        obj = json.loads(data)
        for choice in obj.get("choices") or ():
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text), done, events


# -- scenarios -----------------------------------------------------------------------------------

async def closed_loop(host: str, port: int, payload: bytes, concurrency: int, count: int) -> dict[str, Any]:
    """`concurrency` connections, each sending its next request when the previous answer is in."""
    conns = [await connect(host, port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    remaining = count

    async def worker(conn: HttpConn) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            try:
                status, _, _ = await conn.request(payload)
            except ConnectionError:
                errors += 1
                return
            latencies.append(time.perf_counter() - t)
            if status != 200:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    for c in conns:
        if c.transport:
            c.transport.close()
    return {"latencies": latencies, "errors": errors, "seconds": elapsed}


async def streams(host: str, port: int, payload: bytes, count: int, expected: str) -> dict[str, Any]:
    """Sequential streamed completions: time to the first data chunk, chunk rate, whole text."""
    conn = await connect(host, port)
    ttfc, rates, whole, totals = [], [], 0, []
    for _ in range(count):
        t = time.perf_counter()
        status, body, arrivals = await conn.request(payload, record=True)
        data = [(at, p) for at, p in arrivals if b"data: {" in p]
        if status == 200 and data:
            ttfc.append(data[0][0] - t)
            span = data[-1][0] - data[0][0]
            n = sum(p.count(b"data: {") for _, p in data)
            if span > 0:
                rates.append(n / span)
            totals.append(data[-1][0] - t)
        text, done, _ = sse_text(body)
        whole += int(done and text == expected)
    conn.transport.close()  # type: ignore[union-attr]
    return {"ttfc": ttfc, "chunk_rates": rates, "totals": totals, "whole": whole, "count": count}


async def hold(host: str, port: int, payload: bytes, clients: int, expected: str, ramp: float) -> dict[str, Any]:
    """`clients` streams open at once on a slow reply: the largest silence any client saw before its
    answer, and whether each got its whole answer."""
    max_gap = 0.0
    cadence_gaps: list[float] = []   # between two keep-alives (or the last one and the answer)
    whole = errors = 0
    first_byte: list[float] = []

    async def one(i: int) -> None:
        nonlocal max_gap, whole, errors
        await asyncio.sleep(ramp * i / clients)
        try:
            conn = await connect(host, port)
            t = time.perf_counter()
            status, body, arrivals = await conn.request(payload, record=True)
        except (ConnectionError, OSError):
            errors += 1
            return
        conn.transport.close()  # type: ignore[union-attr]
        last = t
        for n, (at, piece) in enumerate(arrivals):
            max_gap = max(max_gap, at - last)
            if n:
                cadence_gaps.append(at - last)
            last = at
            if b"data: {" in piece:
                break
        if arrivals:
            first_byte.append(arrivals[0][0] - t)
        text, done, _ = sse_text(body)
        if status == 200 and done and text == expected:
            whole += 1
        else:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(clients)))
    cadence_gaps.sort()
    first_byte.sort()

    def pct(v: list[float], q: float) -> float | None:
        return v[min(len(v) - 1, int(q * len(v)))] if v else None

    return {"clients": clients, "whole": whole, "errors": errors, "max_gap": max_gap,
            "first_byte_p50": pct(first_byte, .5), "first_byte_p99": pct(first_byte, .99),
            "max_first_byte": pct(first_byte, 1.0), "cadence_p50": pct(cadence_gaps, .5),
            "cadence_p99": pct(cadence_gaps, .99), "max_cadence_gap": pct(cadence_gaps, 1.0)}


async def soak(host: str, port: int, payloads: list[bytes], concurrency: int, count: int) -> dict[str, Any]:
    """A mix of requests, round-robin over `payloads`; counts answers by status."""
    conns = [await connect(host, port) for _ in range(concurrency)]
    statuses: dict[int, int] = {}
    sent = 0

    async def worker(conn: HttpConn) -> None:
        nonlocal sent
        while sent < count:
            payload = payloads[sent % len(payloads)]
            sent += 1
            if conn.closed:
                conn = await connect(host, port)
            try:
                status, _, _ = await conn.request(payload)
            except ConnectionError:
                status = -1
            statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    return {"statuses": statuses, "seconds": time.perf_counter() - start}


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:  # the generator's own loop lag would otherwise show up as Keyloom's latency
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    scenario, raw = sys.argv[1], json.loads(sys.argv[2])
    host, port = "127.0.0.1", raw.pop("port")
    headers = raw.pop("headers", {})
    path = raw.pop("path")
    if scenario == "soak":
        payloads = [build_request(path, json.dumps(b).encode(), headers) for b in raw.pop("bodies")]
        result = asyncio.run(soak(host, port, payloads, **raw))
    else:
        payload = build_request(path, json.dumps(raw.pop("body")).encode(), headers)
        fn = {"closed_loop": closed_loop, "streams": streams, "hold": hold}[scenario]
        result = asyncio.run(fn(host, port, payload, **raw))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
