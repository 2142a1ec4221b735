"""What WORKERS buys on this machine's cores, with the rest of the rig out of the way.

    python -m bench.cores [--seconds S]

bench/workers.py drives Keyloom with the Python fake Gemini and the Python load generator: on a 2-core box those
two take about half the CPU, so a second worker has little left to use and the ratio says more about the rig
than about Keyloom. Here the upstream is nginx answering Gemini's reply from memory (`return 200 …`, a few
microseconds a request) and the load is wrk (C): nearly all the machine's CPU is Keyloom's. Measures
completions per second (non-streaming chat, closed loop, 32 connections) for WORKERS=1 and WORKERS=2 with
REDIS_URL (a redis-server of its own, append-only), and WORKERS=1 on SQLite; three interleaved rounds, the
median reported. Needs Debian's nginx and wrk (`apt-get install nginx-light wrk`). Writes
bench/results/cores.json. Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PASSWORD, ROOT, cpu_seconds, free_port, machine, make_keys, start_keyloom, wait_http
from bench.workers import process_tree, start_redis
from tests.fake_gemini import DEFAULT_MODELS, text_reply

RESULTS = ROOT / "bench" / "results"
CONNECTIONS = 32
BODY = json.dumps({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "hello"}]})


def nginx_upstream(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    models = json.dumps({"models": DEFAULT_MODELS}).replace("'", "\\'")
    reply = json.dumps(text_reply("Hello there, this is a short answer.")).replace("'", "\\'")
    conf = directory / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {directory};
    proxy_temp_path {directory};
    fastcgi_temp_path {directory};
    uwsgi_temp_path {directory};
    scgi_temp_path {directory};
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location = /v1beta/models {{ return 200 '{models}'; }}
        location ~ ^/v1beta/models/[^/]+:generateContent$ {{ return 200 '{reply}'; }}
    }}
}}
""")
    p = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(directory)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port, "/v1beta/models")
    return p, port


def wrk(port: int, seconds: float, directory: Path) -> dict[str, float]:
    script = directory / "post.lua"
    script.write_text('wrk.method = "POST"\n'
                      f"wrk.body = '{BODY}'\n"
                      'wrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.headers["Authorization"] = "Bearer {PASSWORD}"\n')
    out = subprocess.run([shutil.which("wrk") or "/usr/bin/wrk", "-t1", f"-c{CONNECTIONS}", f"-d{int(seconds)}s",
                          "-s", str(script), f"http://127.0.0.1:{port}/v1/chat/completions"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "requests": total, "non_2xx": int(bad.group(1)) if bad else 0}


def children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk runs as one)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(label: str, upstream: int, env: dict[str, str], seconds: float, tmp: Path,
            rig_pids: list[int]) -> dict[str, Any]:
    data = tmp / f"data-{label}-{time.monotonic_ns()}"
    data.mkdir()
    kl, port = start_keyloom(upstream, data, make_keys(64), ADMIN_PASSWORD="bench-admin-password-1",
                             LOG_LEVEL="WARNING", **env)
    try:
        time.sleep(1.0 if env.get("WORKERS", "1") != "1" else 0.2)  # the workers have bound the port
        wrk(port, 2, tmp)  # warm-up
        pids = process_tree(kl.pid)
        rig = [p for pid in rig_pids for p in process_tree(pid)]
        cpu0 = sum(cpu_seconds(p) for p in pids)
        rig0 = sum(cpu_seconds(p) for p in rig) + children_cpu()
        t0 = time.perf_counter()
        got = wrk(port, seconds, tmp)
        wall = time.perf_counter() - t0
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        rig_cpu = sum(cpu_seconds(p) for p in rig) + children_cpu() - rig0
        got["keyloom_cpu_ms_per_request"] = round(1000 * cpu / max(1, got["requests"]), 3)
        got["keyloom_cores_busy"] = round(cpu / wall, 2)  # of the machine's cores, on average
        got["rig_cores_busy"] = round(rig_cpu / wall, 2)   # nginx, redis-server and wrk
        return got
    finally:
        kl.terminate()
        kl.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) or not shutil.which("wrk"):
        raise SystemExit("bench.cores needs nginx and wrk: apt-get install nginx-light wrk")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        (tmp / "redis").mkdir()
        (tmp / "nginx").mkdir()
        redis, redis_port = start_redis(tmp / "redis")
        ngx, upstream = nginx_upstream(tmp / "nginx")
        url = f"redis://127.0.0.1:{redis_port}/0"
        setups = {"redis, WORKERS=1": {"REDIS_URL": url, "WORKERS": "1"},
                  "redis, WORKERS=2": {"REDIS_URL": url, "WORKERS": "2"},
                  "sqlite, WORKERS=1": {}}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in setups}
        try:
            for _ in range(args.rounds):
                for label, env in setups.items():
                    runs[label].append(measure(label, upstream, env, args.seconds, tmp, [ngx.pid, redis.pid]))
        finally:
            for p in (ngx, redis):
                p.terminate()
                p.wait(10)
    summary = {label: {"rps_median": statistics.median(r["rps"] for r in rs),
                       "rps_rounds": [r["rps"] for r in rs],
                       "cpu_ms_per_request_median": statistics.median(r["keyloom_cpu_ms_per_request"] for r in rs),
                       "keyloom_cores_busy_median": statistics.median(r["keyloom_cores_busy"] for r in rs),
                       "rig_cores_busy_median": statistics.median(r["rig_cores_busy"] for r in rs),
                       "non_2xx": sum(r["non_2xx"] for r in rs)} for label, rs in runs.items()}
    one, two = summary["redis, WORKERS=1"]["rps_median"], summary["redis, WORKERS=2"]["rps_median"]
    sqlite_cpu = summary["sqlite, WORKERS=1"]["cpu_ms_per_request_median"]
    redis_cpu = summary["redis, WORKERS=1"]["cpu_ms_per_request_median"]
    print(f"{'setup':<20} {'req/s (median)':>15} {'CPU ms/request':>15} {'Keyloom cores':>14} {'rig cores':>10} "
          f"{'non-2xx':>8}")
    for label, s in summary.items():
        print(f"{label:<20} {s['rps_median']:>15.0f} {s['cpu_ms_per_request_median']:>15.3f} "
              f"{s['keyloom_cores_busy_median']:>14.2f} {s['rig_cores_busy_median']:>10.2f} {s['non_2xx']:>8}")
    print(f"WORKERS=2 / WORKERS=1: {two / one:.2f}x; CPU per request, Redis / SQLite: {redis_cpu / sqlite_cpu:.3f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cores.json").write_text(json.dumps(
        {"machine": machine(), "seconds": args.seconds, "connections": CONNECTIONS, "setups": summary,
         "workers_ratio": round(two / one, 2), "redis_cpu_ratio": round(redis_cpu / sqlite_cpu, 3)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
