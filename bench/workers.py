"""WORKERS and Redis: what a second process buys, and what the shared store costs.

    python -m bench.workers [--quick]

Starts, on loopback, a redis-server of its own (append-only file, as in production), the fake Gemini and
Keyloom as real processes (`python run.py`), and drives them with the load generator (bench/load.py):
  1. completions per second with WORKERS=1 and with WORKERS=2, both with REDIS_URL (closed loop, concurrency
     CONCURRENCY, non-streaming), and Keyloom's CPU per request (all its processes, user+sys from /proc);
  2. CPU per request of one process with REDIS_URL against one on SQLite (same load), and redis-server's
     own CPU per request beside it.
Each Keyloom is warmed up before it is measured; the three setups run interleaved, 3 rounds (medians shown).
Prints a table and writes bench/results/workers.json (quick: quick.workers.json, which git ignores).
Asserts nothing: the load generator and the fake share the machine's cores with Keyloom, so read the figures
with the machine's core count and how busy it was (all cores, from /proc/stat) beside them: on 2 cores,
2 workers compete with the fake and the load generator.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import PASSWORD, ROOT, cpu_seconds, free_port, machine, make_keys, start_fake, start_keyloom
from bench.run import load

RESULTS = ROOT / "bench" / "results"
AUTH = {"Authorization": f"Bearer {PASSWORD}"}
CHAT = {"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "hello"}]}
CONCURRENCY = 32
FULL = {"warmup": 1000, "requests": 8000}
QUICK = {"warmup": 100, "requests": 600}


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("bench.workers needs redis-server (apt-get install redis-server)")
    port = free_port()
    p = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
                          "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no",
                          "--logfile", str(directory / "redis.log")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 20
    import socket
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("redis-server did not start")


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (the workers), from /proc."""
    out = [pid]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError):
                continue
    return out


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat: how saturated the machine was during a run."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(fields)
    return total - fields[3] - fields[4], total


def wait_workers(port: int, n: int) -> None:
    """Until /health has been answered by each of the n workers (fresh connections spread over them)."""
    seen: set[int] = set()
    end = time.monotonic() + 60
    while len(seen) < n:
        if time.monotonic() > end:
            raise SystemExit(f"only workers {sorted(seen)} answered")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            seen.add(int(json.loads(r.read())["worker"]))


def measure(label: str, fake_port: int, plan: dict[str, int], redis: tuple[int, int] | None, workers: int,
            prefix: str) -> dict[str, Any]:
    env = {"WORKERS": str(workers), "FLUSH_INTERVAL": "1", "ADMIN_PASSWORD": "bench-admin-password-123456"}
    if redis is not None:
        env.update(REDIS_URL=f"redis://127.0.0.1:{redis[1]}/0", REDIS_PREFIX=prefix, REPLICA_NAME="bench")
    with tempfile.TemporaryDirectory() as tmp:
        kl, port = start_keyloom(fake_port, Path(tmp), make_keys(20), **env)
        try:
            wait_workers(port, workers)
            pids = process_tree(kl.pid)
            load("closed_loop", port=port, path="/v1/chat/completions", body=CHAT, headers=AUTH,
                 concurrency=CONCURRENCY, count=plan["warmup"])
            cpu0 = tree_cpu(pids)
            busy0 = machine_busy()
            redis_cpu0 = cpu_seconds(redis[0]) if redis is not None else 0.0
            r = load("closed_loop", port=port, path="/v1/chat/completions", body=CHAT, headers=AUTH,
                     concurrency=CONCURRENCY, count=plan["requests"])
            cpu = tree_cpu(pids) - cpu0
            busy1 = machine_busy()
            redis_cpu = (cpu_seconds(redis[0]) - redis_cpu0) if redis is not None else None
        finally:
            kl.terminate()
            kl.wait(60)
    done = len(r["latencies"])
    return {"setup": label, "store": "redis" if redis is not None else "sqlite", "workers": workers,
            "requests": done, "errors": r["errors"], "rps": round(done / r["seconds"], 1),
            "keyloom_cpu_ms_per_request": round(cpu / max(1, done) * 1000, 3),
            "redis_cpu_ms_per_request": None if redis_cpu is None else round(redis_cpu / max(1, done) * 1000, 3),
            "machine_busy_percent": round(100 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]), 1)}


SETUPS = (("redis, WORKERS=1", True, 1), ("redis, WORKERS=2", True, 2), ("sqlite, WORKERS=1", False, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few hundred requests per setup: seconds, not minutes")
    ap.add_argument("--rounds", type=int, default=0, help="rounds of the three setups, interleaved (default: 3, "
                    "quick: 1); the table gives each setup's median round")
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    rounds = args.rounds or (1 if args.quick else 3)
    fake, fake_port = start_fake()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as rdir:
        redis_proc, redis_port = start_redis(Path(rdir))
        redis = (redis_proc.pid, redis_port)
        try:
            for i in range(rounds):  # interleaved, so a burst of other load on the machine hits every setup alike
                for label, use_redis, workers in SETUPS:
                    runs.append({"round": i, **measure(label, fake_port, plan, redis if use_redis else None, workers,
                                                       f"bench{i}w{workers}:")})
        finally:
            redis_proc.terminate()
            redis_proc.wait(30)
            fake.terminate()
            fake.wait(10)

    def median(label: str, field: str) -> float:
        values = sorted(r[field] for r in runs if r["setup"] == label and r[field] is not None)
        return values[len(values) // 2] if values else 0.0

    rows = [{"setup": label, "rps_median": median(label, "rps"),
             "rps_best": max(r["rps"] for r in runs if r["setup"] == label),
             "errors": sum(r["errors"] for r in runs if r["setup"] == label),
             "keyloom_cpu_ms_per_request": median(label, "keyloom_cpu_ms_per_request"),
             "redis_cpu_ms_per_request": median(label, "redis_cpu_ms_per_request") if use_redis else None,
             "machine_busy_percent": median(label, "machine_busy_percent")}
            for label, use_redis, _ in SETUPS]
    one, two, sqlite = rows
    summary = {
        "workers2_vs_workers1_rps": round(two["rps_median"] / one["rps_median"], 3),
        "redis_vs_sqlite_cpu_per_request": round(one["keyloom_cpu_ms_per_request"]
                                                 / sqlite["keyloom_cpu_ms_per_request"], 3),
    }
    out = {"machine": machine(), "concurrency": CONCURRENCY, "plan": plan, "rounds": rounds, "rows": rows,
           "summary": summary, "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("quick.workers.json" if args.quick else "workers.json")).write_text(json.dumps(out, indent=2) + "\n")
    print(f"machine: {out['machine']['cpu']} ({out['machine']['cores']} cores); concurrency {CONCURRENCY}, "
          f"{plan['requests']} non-streaming completions per setup and round against the fake Gemini, "
          f"{rounds} round(s): medians")
    print(f"{'setup':<20} {'req/s':>9} {'best':>8} {'errors':>7} {'Keyloom CPU ms/req':>19} {'redis CPU ms/req':>17} "
          f"{'machine busy':>13}")
    for row in rows:
        rcpu = "-" if row["redis_cpu_ms_per_request"] is None else f"{row['redis_cpu_ms_per_request']:.3f}"
        print(f"{row['setup']:<20} {row['rps_median']:>9.1f} {row['rps_best']:>8.1f} {row['errors']:>7} "
              f"{row['keyloom_cpu_ms_per_request']:>19.3f} {rcpu:>17} {row['machine_busy_percent']:>12.1f}%")
    print(f"WORKERS=2 / WORKERS=1 completions per second: {summary['workers2_vs_workers1_rps']}x;  "
          f"CPU per request, Redis / SQLite: {summary['redis_vs_sqlite_cpu_per_request']}x")

if __name__ == "__main__":
    sys.exit(main())
