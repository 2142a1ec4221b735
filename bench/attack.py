"""What a stranger (or a holder of the shared chat password) can make Keyloom spend: `python -m bench.attack`.

Each scenario starts Keyloom as a process on loopback and attacks it the way the hardening review did
(issue 12), then reports a figure. Nothing here is asserted: the tests bound these things; this reports
how far they are from the bounds, before and after a change. Every address is on loopback.

  held_memory        RSS Keyloom holds while 40 connections without credentials each send a 32 MiB body
  guesses            wrong passwords per second answered with 401 (not refused) on /v1/models, one connection
  image_flood        longest /health wait while one request names 32 000 image URLs (2.5 MB)
  image_size         peak RSS while one request names 12 images of 20 MiB each (served on loopback)
  render             longest /health wait while /api/render is given 1 MB of '['
  hanging_upstream   attempts (and seconds) one request costs when the upstream accepts and never answers

`--only NAME[,NAME]` runs some of them. Results go to stdout as JSON and to bench/results/attack.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import PASSWORD, ROOT, free_port, make_keys, rss_mb, start_fake, start_keyloom
from bench.run import Sampler

RESULTS = ROOT / "bench" / "results"
AUTH = {"Authorization": f"Bearer {PASSWORD}", "Content-Type": "application/json"}


def png(size: int) -> bytes:
    """A valid PNG of about `size` bytes (an uncompressed grey image)."""
    side = max(1, int((size / 1.02) ** 0.5))
    raw = b"".join(b"\x00" + b"\x80" * side for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    head = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")


@contextmanager
def image_server(size: int) -> Iterator[int]:
    data = png(size)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


class HealthProbe(threading.Thread):
    """GET /health back to back on a fresh connection each time; keeps the longest wait."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.longest = 0.0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t = time.perf_counter()
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                c.request("GET", "/health")
                c.getresponse().read()
                c.close()
            except OSError:
                pass
            self.longest = max(self.longest, time.perf_counter() - t)
            self.samples += 1
            self._halt.wait(0.02)

    def finish(self) -> float:
        self._halt.set()
        self.join()
        return round(self.longest, 3)


def post(port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 600) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body, headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def held_memory(kl_pid: int, port: int, connections: int = 40, size: int = 32 * 1024 * 1024 - 1024) -> dict:
    """40 sockets each declare a body just under the limit and send all of it but the last byte."""
    before = rss_mb(kl_pid)
    socks = []
    block = b"x" * (1024 * 1024)
    peak = Sampler(kl_pid, every=0.02)
    peak.start()
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(30)
        s.sendall(f"POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {size}\r\n\r\n".encode())
        socks.append(s)
    sent = [0] * connections
    for i, s in enumerate(socks):
        try:
            while sent[i] < size - 1:
                n = min(len(block), size - 1 - sent[i])
                s.sendall(block[:n])
                sent[i] += n
        except OSError:
            pass  # the server answered and closed: it did not want the body
    time.sleep(1.0)  # let the server take in what is in flight before reading its RSS
    held = rss_mb(kl_pid)
    for s in socks:
        s.close()
    return {"connections": connections, "body_bytes_each": size, "rss_before_mb": round(before, 1),
            "rss_held_mb": round(held, 1), "rss_peak_mb": peak.finish()["peak_rss_mb"],
            "bytes_accepted_mb": round(sum(sent) / 1048576, 1)}


def guesses(port: int, seconds: float = 3.0) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answered = refused = other = 0
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        c.request("GET", "/v1/models", headers={"Authorization": f"Bearer wrong-guess-{i:08d}"})
        r = c.getresponse()
        r.read()
        if r.status == 401:
            answered += 1
        elif r.status == 429:
            refused += 1
        else:
            other += 1
        if r.getheader("Connection", "").lower() == "close":
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.close()
    return {"seconds": seconds, "guesses_checked_per_second": round(answered / seconds, 1),
            "refused_429": refused, "other": other}


def image_flood(port: int, image_port: int, count: int = 32_000) -> dict:
    urls = [f"http://127.0.0.1:{image_port}/i/{i:06d}.png" for i in range(count)]
    body = json.dumps({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"}, *({"type": "image_url", "image_url": {"url": u}} for u in urls)]}]})
    probe = HealthProbe(port)
    probe.start()
    t = time.perf_counter()
    status, _ = post(port, "/v1/chat/completions", body.encode(), AUTH)
    took = time.perf_counter() - t
    return {"urls": count, "body_mb": round(len(body) / 1048576, 2), "status": status,
            "request_seconds": round(took, 2), "health_longest_wait_s": probe.finish()}


def image_size(kl_pid: int, port: int, image_port: int, count: int = 12) -> dict:
    body = json.dumps({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        *({"type": "image_url", "image_url": {"url": f"http://127.0.0.1:{image_port}/big/{i}.png"}}
          for i in range(count))]}]})
    before = rss_mb(kl_pid)
    peak = Sampler(kl_pid, every=0.02)
    peak.start()
    status, _ = post(port, "/v1/chat/completions", body.encode(), AUTH)
    return {"images": count, "image_mb": 20, "status": status, "rss_before_mb": round(before, 1),
            "rss_peak_mb": peak.finish()["peak_rss_mb"]}


def render(port: int, size: int = 1024 * 1024, pieces: int = 1) -> dict:
    """1 MiB of '[' (one text, as the review sent it; or in `pieces` texts, to stay within a per-text budget)."""
    probe = HealthProbe(port)
    probe.start()
    time.sleep(0.2)
    t = time.perf_counter()
    texts = ["[" * (size // pieces)] * pieces
    status, _ = post(port, "/api/render", json.dumps({"markdown": texts if pieces > 1 else texts[0]}).encode(),
                     AUTH)
    took = time.perf_counter() - t
    return {"markdown_bytes": size, "texts": pieces, "status": status, "request_seconds": round(took, 2),
            "health_longest_wait_s": probe.finish()}


@contextmanager
def hanging_upstream() -> Iterator[tuple[int, list[float]]]:
    """Accepts connections, reads requests, never answers; records when each generate request came."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(512)
    seen: list[float] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(0.5)
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, _, buf = buf.partition(b"\r\n\r\n")
                if b":generateContent" in head.split(b"\r\n", 1)[0]:
                    seen.append(time.monotonic())
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        buf = buf[int(line.split(b":")[1]):]

    def accept() -> None:
        srv.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield srv.getsockname()[1], seen
    finally:
        stop.set()
        srv.close()
        for c in held:
            c.close()


def attempts_against_hang(tmp: Path) -> dict:
    timeout = 1.0
    with hanging_upstream() as (up_port, seen):
        port = free_port()
        import os
        import subprocess
        import sys
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "GEMINI_API_KEYS": ",".join(make_keys(3)),
               "GEMINI_BASE_URL": f"http://127.0.0.1:{up_port}", "PASSWORD": PASSWORD, "PORT": str(port),
               "HOST": "127.0.0.1", "DATA_DIR": str(tmp / "hang"), "ACCESS_LOG": "false", "LOG_LEVEL": "ERROR",
               "UPSTREAM_TIMEOUT": str(timeout), "FAKE_STREAMING": "false", "MAX_REQUESTS_PER_MINUTE": "0",
               "MODELS_REFRESH_INTERVAL": "86400"}
        p = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            from bench.common import wait_http
            wait_http(port, "/health")
            t = time.perf_counter()
            status, body = post(port, "/v1/chat/completions", json.dumps(
                {"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "hi"}]}).encode(), AUTH)
            took = time.perf_counter() - t
        finally:
            p.terminate()
            p.wait(30)
    n = len(seen)
    return {"upstream_timeout_s": timeout, "attempts": n, "status": status, "request_seconds": round(took, 2),
            # what the same attempts cost with the default UPSTREAM_TIMEOUT of 300 s (before REQUEST_DEADLINE, if any)
            "minutes_at_default_timeout": round(n * 300 / 60, 1),
            "message": json.loads(body).get("error", {}).get("message", "")[:160] if body else ""}


SCENARIOS = ("held_memory", "guesses", "image_flood", "image_size", "render", "hanging_upstream")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    args = ap.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    out: dict[str, Any] = {}
    fake, fake_port = start_fake()
    try:
        with tempfile.TemporaryDirectory() as tmp_s:
            tmp = Path(tmp_s)

            def keyloom(name: str, **env: str) -> tuple[Any, int]:
                return start_keyloom(fake_port, tmp / name, make_keys(3), IMAGE_FETCH_ALLOW_PRIVATE="true",
                                     ADMIN_PASSWORD="bench-admin-password-1", **env)

            for name in chosen:
                if name == "hanging_upstream":
                    out[name] = attempts_against_hang(tmp)
                    print(name, json.dumps(out[name]), flush=True)
                    continue
                kl, port = keyloom(name)
                try:
                    if name == "held_memory":
                        out[name] = held_memory(kl.pid, port)
                    elif name == "guesses":
                        out[name] = guesses(port)
                    elif name == "image_flood":
                        with image_server(200) as ip:
                            out[name] = image_flood(port, ip)
                    elif name == "image_size":
                        with image_server(20 * 1024 * 1024 - 4096) as ip:
                            out[name] = image_size(kl.pid, port, ip)
                    elif name == "render":
                        out[name] = render(port)
                        out["render_in_pieces"] = render(port, pieces=4)
                        print("render_in_pieces", json.dumps(out["render_in_pieces"]), flush=True)
                finally:
                    kl.terminate()
                    kl.wait(30)
                print(name, json.dumps(out[name]), flush=True)
    finally:
        fake.terminate()
        fake.wait(10)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attack.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
