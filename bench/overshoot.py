"""How far past a daily limit a cluster goes: three replicas on one Redis, one key, concurrent load.

    python -m bench.overshoot [--quick]

Starts a redis-server of its own, the fake Gemini and three Keyloom replicas (`python run.py`, REDIS_URL,
API_KEY_DAILY_LIMIT=LIMIT, one key), then sends chat completions from THREADS client threads per replica
until every replica has refused REFUSALS in a row. Served = the 200s the clients got (each one a call the
fake answered); overshoot = served − LIMIT. Beside it, the bound the README states: what the other replicas
served in one FLUSH_INTERVAL tick at the measured rate (rate × (replicas − 1) / replicas × interval). Run for
FLUSH_INTERVAL 1 (the default) and 0.2. Writes bench/results/overshoot.json. Asserts nothing.
"""
from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import PASSWORD, ROOT, chat_body, machine, make_keys, start_fake, start_keyloom
from bench.workers import start_redis

RESULTS = ROOT / "bench" / "results"
REPLICAS = 3
REFUSALS = 5


def run(limit: int, interval: str, threads: int) -> dict[str, Any]:
    fake, fake_port = start_fake()
    procs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "redis").mkdir()
            redis, redis_port = start_redis(Path(tmp) / "redis")
            procs.append(redis)
            ports = []
            for i in range(REPLICAS):
                p, port = start_keyloom(fake_port, Path(tmp) / f"r{i}", make_keys(1), REDIS_URL=f"redis://127.0.0.1:"
                                        f"{redis_port}/0", API_KEY_DAILY_LIMIT=str(limit), FLUSH_INTERVAL=interval,
                                        REPLICA_NAME=f"r{i}", ADMIN_PASSWORD="bench-admin-password-1")
                procs.append(p)
                ports.append(port)
            served = [0] * REPLICAS
            lock = threading.Lock()

            def client(i: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", ports[i], timeout=30)
                refused = 0
                while refused < REFUSALS:
                    conn.request("POST", "/v1/chat/completions", chat_body(),
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {PASSWORD}"})
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        refused = 0
                        with lock:
                            served[i] += 1
                    else:
                        refused += 1
                conn.close()

            workers = [threading.Thread(target=client, args=(i,)) for i in range(REPLICAS) for _ in range(threads)]
            start = time.perf_counter()
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            seconds = time.perf_counter() - start
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        fake.terminate()
        fake.wait(10)
    total = sum(served)
    rate = total / seconds
    bound = rate * (REPLICAS - 1) / REPLICAS * float(interval)
    return {"limit": limit, "flush_interval": float(interval), "threads_per_replica": threads, "served": total,
            "per_replica": served, "overshoot": total - limit, "seconds": round(seconds, 2),
            "requests_per_second": round(rate, 1), "bound_others_one_tick": round(bound, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    limit = 200 if args.quick else 1000
    rows = [run(limit, interval, 4) for interval in ("1", "0.2")]
    print(f"{'FLUSH_INTERVAL':>14} {'limit':>6} {'served':>7} {'overshoot':>9} {'req/s':>7} {'bound':>6}")
    for r in rows:
        print(f"{r['flush_interval']:>14} {r['limit']:>6} {r['served']:>7} {r['overshoot']:>9} "
              f"{r['requests_per_second']:>7} {r['bound_others_one_tick']:>6}")
    RESULTS.mkdir(exist_ok=True)
    name = "quick.overshoot.json" if args.quick else "overshoot.json"
    (RESULTS / name).write_text(json.dumps({"machine": machine(), "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
