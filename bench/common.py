"""Shared pieces of the benchmarks: processes on loopback, a lean client, /proc readings, percentiles."""
from __future__ import annotations

import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-123456"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on port {port}")


def start_fake(latency: float = 0.0) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "tests.fake_gemini", "--port", str(port), "--latency", str(latency)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port, "/v1beta/models")
    return p, port


def start_keyloom(fake_port: int, data_dir: Path, keys: list[str], **env: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    full = {"PATH": os.environ.get("PATH", ""), "HOME": str(data_dir), "GEMINI_API_KEYS": ",".join(keys),
            "GEMINI_BASE_URL": f"http://127.0.0.1:{fake_port}", "PASSWORD": PASSWORD, "PORT": str(port),
            "HOST": "127.0.0.1", "DATA_DIR": str(data_dir), "ACCESS_LOG": "false", "LOG_LEVEL": "WARNING",
            "MAX_REQUESTS_PER_MINUTE": "0", "MAX_REQUESTS_PER_DAY_PER_IP": "0", "API_KEY_DAILY_LIMIT": "0",
            # the load sends identical bodies at once: sharing would answer most from one upstream call
            # and measure that instead of the request path
            "INFLIGHT_SHARING": "false",
            # every client of the load generator is 127.0.0.1: the per-address cap would refuse the held crowd
            "MAX_CONNECTIONS_PER_CLIENT": "0"}
    full.update(env)
    p = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=full, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_http(port, "/health")
    return p, port


def make_keys(n: int) -> list[str]:
    return [f"AIzaSyBench{i:06d}" + "x" * 22 for i in range(n)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def chat_body(text: str = "hello") -> bytes:
    return json.dumps({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": text}]}).encode()


def gemini_body(text: str = "hello") -> bytes:
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]}).encode()


def timed_posts(port: int, path: str, body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """n sequential POSTs on one keep-alive connection; → latencies in seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - t)
        if resp.status != 200:
            raise RuntimeError(f"{path} answered {resp.status}")
    conn.close()
    return out


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}
