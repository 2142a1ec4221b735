"""What counting and flushing cost on the request path, with 3 keys and with 1 000.

    python -m bench.quota [--requests N]

Measures, in separate processes on loopback: the p50 latency of a non-streaming completion through
Keyloom (counting on, FLUSH_INTERVAL=1, a real SQLite file) minus the p50 of the same request sent
straight to the fake Gemini; for a 3-key and a 1 000-key pool. Then the cost of choosing a key as the
day's history grows (0, 10 000 and 100 000 earlier picks), measured in-process.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    PASSWORD,
    ROOT,
    chat_body,
    gemini_body,
    machine,
    make_keys,
    percentile,
    start_fake,
    start_keyloom,
    timed_posts,
)


def added_latency(n: int, keys: int) -> dict[str, float]:
    fake, fake_port = start_fake()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kl, port = start_keyloom(fake_port, Path(tmp), make_keys(keys), FLUSH_INTERVAL="1")
            try:
                direct_headers = {"Content-Type": "application/json", "x-goog-api-key": make_keys(1)[0]}
                kl_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {PASSWORD}"}
                timed_posts(fake_port, "/v1beta/models/gemini-2.0-flash:generateContent", gemini_body(),
                            direct_headers, 200)  # warm up
                timed_posts(port, "/v1/chat/completions", chat_body(), kl_headers, 200)
                direct = timed_posts(fake_port, "/v1beta/models/gemini-2.0-flash:generateContent", gemini_body(),
                                     direct_headers, n)
                through = timed_posts(port, "/v1/chat/completions", chat_body(), kl_headers, n)
            finally:
                kl.terminate()
                kl.wait(10)
    finally:
        fake.terminate()
        fake.wait(10)
    return {"keys": keys, "requests": n, "direct_p50_ms": percentile(direct, 0.5) * 1000,
            "keyloom_p50_ms": percentile(through, 0.5) * 1000,
            "added_p50_ms": (percentile(through, 0.5) - percentile(direct, 0.5)) * 1000,
            "added_p99_ms": (percentile(through, 0.99) - percentile(direct, 0.99)) * 1000}


def pick_cost() -> list[dict[str, float]]:
    sys.path.insert(0, str(ROOT))
    from server.clock import SystemClock
    from server.pool.keys import KeyPool
    from server.pool.quota import DailyLimits, QuotaDay
    from server.settings import Settings

    settings = Settings.from_env({"API_KEY_DAILY_LIMIT": "0"})
    clock = SystemClock()
    pool = KeyPool(make_keys(1000), clock, QuotaDay(clock, "America/Los_Angeles"), DailyLimits(lambda: settings))
    out = []
    done = 0
    for history in (0, 10_000, 100_000):
        while done < history:
            pool.pick("gemini-2.0-flash")
            done += 1
        samples = 20_000
        t = time.perf_counter()
        for _ in range(samples):
            pool.pick("gemini-2.0-flash")
        done += samples
        out.append({"history": history, "pick_us": (time.perf_counter() - t) / samples * 1e6})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    result = {"machine": machine(), "latency": [added_latency(args.requests, k) for k in (3, 1000)],
              "pick": pick_cost()}
    out = ROOT / "bench" / "results" / "quota.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| pool | direct p50 | through Keyloom p50 | added p50 | added p99 |")
    print("|---|---|---|---|---|")
    for r in result["latency"]:
        print(f"| {r['keys']} keys | {r['direct_p50_ms']:.3f} ms | {r['keyloom_p50_ms']:.3f} ms | "
              f"{r['added_p50_ms']:.3f} ms | {r['added_p99_ms']:.3f} ms |")
    print()
    print("| earlier picks today (1 000 keys) | one pick |")
    print("|---|---|")
    for r in result["pick"]:
        print(f"| {r['history']:,} | {r['pick_us']:.2f} µs |")
    print(f"\n(written to {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
