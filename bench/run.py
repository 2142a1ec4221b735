"""The benchmark: `python -m bench.run` (full, minutes) or `python -m bench.run --quick` (seconds).

Starts the fake Gemini and Keyloom as separate processes on loopback and drives them with the
load generator (bench/load.py) in a third process. Measures, in one run:
  1. non-streaming completions at concurrency 1, 16, 64, through Keyloom and straight to the fake
     (the native request), and Keyloom's own CPU time per request (user+sys from /proc);
  2. real streaming of a 500-word answer: time to first chunk added by Keyloom, chunks per second;
  3. fake streaming: thousands of clients held at once on a slow (20 s) reply: Keyloom's peak RSS
     and CPU, the longest silence any client saw, whether every client got its whole answer;
  4. a soak of mixed requests: RSS and open file descriptors before and after;
  5. what GET /metrics costs: CPU per request with METRICS off, on, and on with a scrape every second.
Writes bench/results/latest.json and latest.md (quick: quick.json and quick.md). Asserts nothing:
the figures are for reading.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PASSWORD, ROOT, cpu_seconds, machine, make_keys, percentile, rss_mb, start_fake, start_keyloom
from tests.fake_gemini import WORDS

RESULTS = ROOT / "bench" / "results"
AUTH = {"Authorization": f"Bearer {PASSWORD}"}
HELLO = [{"role": "user", "content": "hello"}]


@dataclass
class Plan:
    requests: dict[int, int]      # concurrency → requests
    stream_requests: int
    hold_clients: int
    hold_wait: float              # seconds the upstream takes to answer a held client
    hold_ramp: float              # seconds over which the held clients connect
    soak_requests: int


# 5 000 clients connect over 10 s and each waits 20 s for its answer: all are held at once for 10 s or more.
FULL = Plan(requests={1: 2000, 16: 10000, 64: 20000}, stream_requests=300, hold_clients=5000, hold_wait=20,
            hold_ramp=10, soak_requests=50_000)
QUICK = Plan(requests={1: 100, 16: 400, 64: 600}, stream_requests=20, hold_clients=100, hold_wait=2,
             hold_ramp=0.5, soak_requests=1000)


def load(scenario: str, **args: Any) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.load", scenario, json.dumps(args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


class Sampler(threading.Thread):
    """Samples a process's RSS and CPU while a scenario runs."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_rss = 0.0
        self.cpu0 = cpu_seconds(pid)
        self.t0 = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
            except OSError:
                return
            time.sleep(self.every)

    def finish(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        wall = time.monotonic() - self.t0
        cpu = cpu_seconds(self.pid) - self.cpu0
        return {"peak_rss_mb": round(self.peak_rss, 1), "cpu_seconds": round(cpu, 2),
                "cpu_percent_of_one_core": round(100 * cpu / wall, 1), "wall_seconds": round(wall, 2)}


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def non_streaming(plan: Plan, fake_port: int, kl_pid: int, kl_port: int) -> list[dict[str, Any]]:
    rows = []
    native = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    chat = {"model": "gemini-2.0-flash", "messages": HELLO}
    for c, n in plan.requests.items():
        load("closed_loop", port=fake_port, path="/v1beta/models/gemini-2.0-flash:generateContent", body=native,
             headers={"x-goog-api-key": make_keys(1)[0]}, concurrency=c, count=max(50, n // 10))  # warm-up
        load("closed_loop", port=kl_port, path="/v1/chat/completions", body=chat, headers=AUTH, concurrency=c,
             count=max(50, n // 10))
        direct = load("closed_loop", port=fake_port, path="/v1beta/models/gemini-2.0-flash:generateContent",
                      body=native, headers={"x-goog-api-key": make_keys(1)[0]}, concurrency=c, count=n)
        cpu0 = cpu_seconds(kl_pid)
        through = load("closed_loop", port=kl_port, path="/v1/chat/completions", body=chat, headers=AUTH,
                       concurrency=c, count=n)
        cpu = cpu_seconds(kl_pid) - cpu0
        d, t = direct["latencies"], through["latencies"]
        rows.append({
            "concurrency": c, "requests": n,
            "native_rps": round(len(d) / direct["seconds"], 1), "native_p50_ms": ms(percentile(d, .5)),
            "native_p99_ms": ms(percentile(d, .99)), "native_errors": direct["errors"],
            "keyloom_rps": round(len(t) / through["seconds"], 1), "keyloom_p50_ms": ms(percentile(t, .5)),
            "keyloom_p99_ms": ms(percentile(t, .99)), "keyloom_errors": through["errors"],
            "added_p50_ms": ms(percentile(t, .5) - percentile(d, .5)),
            "added_p99_ms": ms(percentile(t, .99) - percentile(d, .99)),
            "throughput_ratio": round((len(t) / through["seconds"]) / (len(d) / direct["seconds"]), 3),
            "keyloom_cpu_ms_per_request": round(cpu / max(1, len(t)) * 1000, 3),
        })
    return rows


# The same answer through each API a client can speak: what translation and framing cost per request.
DIALECTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": HELLO}),
    "responses": ("/v1/responses", {"input": "hello", "store": False}),
    "messages": ("/v1/messages", {"max_tokens": 1000, "messages": HELLO}),
}


def dialects(plan: Plan, kl_pid: int, kl_port: int, real_pid: int, real_port: int) -> list[dict[str, Any]]:
    """Keyloom's CPU per request for each API, non-streaming (fake streaming's Keyloom) and with a real stream
    of 50 events (the other Keyloom), at concurrency 16; each route warmed up first, then measured."""
    rows = []
    n = plan.requests[16]
    for stream, pid, port, model in ((False, kl_pid, kl_port, "gemini-2.0-flash"),
                                     (True, real_pid, real_port, STREAM_MODEL)):
        count = n if not stream else max(50, n // 5)
        for name, (path, extra) in DIALECTS.items():
            body = {"model": model, **extra, "stream": stream}
            load("closed_loop", port=port, path=path, body=body, headers=AUTH, concurrency=16,
                 count=max(50, count // 10))
            cpu0 = cpu_seconds(pid)
            r = load("closed_loop", port=port, path=path, body=body, headers=AUTH, concurrency=16, count=count)
            cpu = cpu_seconds(pid) - cpu0
            rows.append({"api": name, "stream": stream, "requests": count, "errors": r["errors"],
                         "rps": round(len(r["latencies"]) / r["seconds"], 1),
                         "p50_ms": ms(percentile(r["latencies"], .5)),
                         "cpu_ms_per_request": round(cpu / max(1, len(r["latencies"])) * 1000, 3)})
    for row in rows:
        chat = next(x for x in rows if x["api"] == "chat" and x["stream"] == row["stream"])
        row["cpu_vs_chat"] = round(row["cpu_ms_per_request"] / chat["cpu_ms_per_request"], 3)
    return rows


STREAM_MODEL = "bench-words-500-pieces-50"
HOLD_WORDS = 20


def hold_model(plan: Plan) -> str:
    return f"bench-wait-{plan.hold_wait:g}-words-{HOLD_WORDS}"


def streaming(plan: Plan, fake_port: int, kl_port: int) -> dict[str, Any]:
    model = STREAM_MODEL
    native = {"contents": [{"role": "user", "parts": [{"text": "write"}]}]}
    expected = " ".join(WORDS[i % len(WORDS)] for i in range(500))
    direct = load("streams", port=fake_port, path=f"/v1beta/models/{model}:streamGenerateContent?alt=sse",
                  body=native, headers={"x-goog-api-key": make_keys(1)[0]}, count=plan.stream_requests,
                  expected=expected)
    through = load("streams", port=kl_port, path="/v1/chat/completions", headers=AUTH,
                   body={"model": model, "messages": HELLO, "stream": True}, count=plan.stream_requests,
                   expected=expected)
    return {
        "requests": plan.stream_requests, "events_per_answer": 50,
        "native_ttfc_p50_ms": ms(percentile(direct["ttfc"], .5)),
        "keyloom_ttfc_p50_ms": ms(percentile(through["ttfc"], .5)),
        "added_ttfc_p50_ms": ms(percentile(through["ttfc"], .5) - percentile(direct["ttfc"], .5)),
        "added_ttfc_p99_ms": ms(percentile(through["ttfc"], .99) - percentile(direct["ttfc"], .99)),
        "native_chunks_per_s": round(percentile(direct["chunk_rates"], .5)),
        "keyloom_chunks_per_s": round(percentile(through["chunk_rates"], .5)),
        "whole_answers": through["whole"],
    }


def holding(plan: Plan, kl_pid: int, kl_port: int, interval: float) -> dict[str, Any]:
    model = hold_model(plan)
    expected = " ".join(WORDS[i % len(WORDS)] for i in range(HOLD_WORDS))
    rss_before = rss_mb(kl_pid)
    sampler = Sampler(kl_pid)
    sampler.start()
    result = load("hold", port=kl_port, path="/v1/chat/completions", headers=AUTH,
                  body={"model": model, "messages": HELLO, "stream": True}, clients=plan.hold_clients,
                  expected=expected, ramp=plan.hold_ramp)
    stats = sampler.finish()
    def r3(v: float | None) -> float:
        return round(v or 0.0, 3)

    return {"clients": plan.hold_clients, "upstream_wait_s": plan.hold_wait, "ramp_s": plan.hold_ramp,
            "keepalive_interval_s": interval, "whole_answers": result["whole"], "errors": result["errors"],
            "max_keepalive_gap_s": r3(result["max_cadence_gap"]),
            "max_gap_over_interval": round((result["max_cadence_gap"] or 0) / interval, 2),
            "keepalive_gap_p99_s": r3(result["cadence_p99"]),
            "first_byte_p50_s": r3(result["first_byte_p50"]), "first_byte_p99_s": r3(result["first_byte_p99"]),
            "max_first_byte_s": r3(result["max_first_byte"]),
            "rss_before_mb": round(rss_before, 1), **stats}


def soak(plan: Plan, kl_pid: int, kl_port: int) -> dict[str, Any]:
    bodies = [
        {"model": "gemini-2.0-flash", "messages": HELLO},
        {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
        {"model": "gemini-2.0-flash", "messages": [{"role": "system", "content": "s"}, *HELLO], "temperature": 0.5},
        {"model": "gemini-2.0-flash", "messages": []},                      # 400: no messages
        {"model": "gemini-0-no-such-model", "messages": HELLO},             # 404: not a model Google lists
        {"model": "gemini-2.5-flash", "messages": HELLO, "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}]},
    ]
    load("soak", port=kl_port, path="/v1/chat/completions", headers=AUTH, bodies=bodies, concurrency=16,
         count=min(2000, plan.soak_requests))  # warm-up: caches, pools, allocator arenas
    time.sleep(1.5)  # let a flush run
    before = {"rss_mb": round(rss_mb(kl_pid), 1), "fds": fds(kl_pid)}
    result = load("soak", port=kl_port, path="/v1/chat/completions", headers=AUTH, bodies=bodies, concurrency=16,
                  count=plan.soak_requests)
    time.sleep(1.5)
    after = {"rss_mb": round(rss_mb(kl_pid), 1), "fds": fds(kl_pid)}
    return {"requests": plan.soak_requests, "statuses": result["statuses"], "seconds": round(result["seconds"], 1),
            "rss_before_mb": before["rss_mb"], "rss_after_mb": after["rss_mb"],
            "fds_before": before["fds"], "fds_after": after["fds"]}


METRICS_ADMIN = "bench-admin-password-123456"


class Scraper(threading.Thread):
    """GET /metrics every `every` seconds, as a Prometheus would, while a scenario runs."""

    def __init__(self, port: int, every: float = 1.0):
        super().__init__(daemon=True)
        self.port, self.every = port, every
        self.scrapes = 0
        self.bytes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            req = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics",
                                         headers={"Authorization": f"Bearer {METRICS_ADMIN}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                self.bytes = len(resp.read())
            self.scrapes += 1
            self._halt.wait(self.every)

    def finish(self) -> int:
        self._halt.set()
        self.join()
        return self.scrapes


def _set_metrics(port: int, on: bool) -> None:
    """METRICS is a live setting: switched through the admin API, so one process is measured both ways."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/settings", method="PUT",
                                 data=json.dumps({"METRICS": "true" if on else "false"}).encode(),
                                 headers={"Authorization": f"Bearer {METRICS_ADMIN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def metrics_in_process(keys: int = 1000) -> dict[str, float]:
    """The same costs without another process's noise: the per-request hook (server/metrics.py
    observe_request, plus one upstream attempt) timed in this process, and one scrape's render of a pool of
    `keys` keys with two models each in use (the end-to-end figures above cannot resolve 1-2 % on a busy
    machine)."""
    import timeit
    from types import SimpleNamespace

    from server.app import Keyloom
    from server.metrics import observe_request
    from server.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        s = Settings.from_env({"GEMINI_API_KEYS": ",".join(make_keys(keys)), "PASSWORD": PASSWORD,
                               "ADMIN_PASSWORD": METRICS_ADMIN, "DATA_DIR": tmp, "API_KEY_DAILY_LIMIT": "20"})
        kl = Keyloom(s, password=s.PASSWORD, data_dir=Path(tmp))
        for k in kl.pool.keys:
            for m in ("gemini-2.5-flash", "gemini-2.0-flash"):
                kl.pool.usage.add(k.fp, m, requests=3, successes=3)
                kl.metrics.attempt(k.fp, "gemini", m, "ok")
        body, _ = kl.metrics_registry.render("")
        scrape = timeit.timeit(lambda: kl.metrics_registry.render(""), number=10) / 10
        key = kl.pool.keys[0]
        handler = SimpleNamespace(
            request=SimpleNamespace(request_time=lambda: 0.2, path="/v1/chat/completions", _start_time=0.0),
            ctx=SimpleNamespace(trace=SimpleNamespace(key_fp=key.fp, model="gemini-2.5-flash", client=None),
                                client_gone=False),
            logical_status=lambda: 200, error_status=None)
        n = 100_000
        hook = timeit.timeit(lambda: (observe_request(kl, handler), kl.ops.attempt(key, "gemini-2.5-flash", "ok")),
                             number=n) / n
    return {"hook_us_per_request": round(hook * 1e6, 2), "scrape_keys": keys,
            "scrape_ms": round(scrape * 1000, 1), "scrape_bytes_big": len(body)}


def metrics_cost(plan: Plan, fake_port: int, tmp: Path) -> dict[str, Any]:
    """Keyloom's CPU per chat request (non-streaming, concurrency 16) with METRICS=false, with metrics on but
    never scraped, and on with GET /metrics scraped every second: one process (two differ by more than the
    effect), switched through the admin API, the three measured in turn `rounds` times (the order reversed
    every other round, so a drift falls on all three); CPU is summed over the rounds (/proc counts in
    10 ms ticks, so short runs alone are coarse)."""
    n = plan.requests[16]
    rounds = 6 if plan is FULL else 4
    chat = {"model": "gemini-2.0-flash", "messages": HELLO}
    p, port = start_keyloom(fake_port, tmp / "metrics", make_keys(3), ADMIN_PASSWORD=METRICS_ADMIN,
                            FAKE_STREAMING="false")
    cpu = {"off": 0.0, "on": 0.0, "scraped": 0.0}
    done = {"off": 0, "on": 0, "scraped": 0}
    scrapes = size = 0
    try:
        load("closed_loop", port=port, path="/v1/chat/completions", body=chat, headers=AUTH, concurrency=16,
             count=max(50, n // 5))  # warm-up
        for i in range(rounds):
            for mode in (("off", "on", "scraped") if i % 2 == 0 else ("scraped", "on", "off")):
                _set_metrics(port, mode != "off")
                scraper = Scraper(port) if mode == "scraped" else None
                if scraper is not None:
                    scraper.start()
                cpu0 = cpu_seconds(p.pid)
                r = load("closed_loop", port=port, path="/v1/chat/completions", body=chat, headers=AUTH,
                         concurrency=16, count=n)
                cpu[mode] += cpu_seconds(p.pid) - cpu0
                done[mode] += len(r["latencies"])
                if scraper is not None:
                    scrapes += scraper.finish()
                    size = scraper.bytes
    finally:
        p.terminate()
        p.wait(30)
    per = {mode: cpu[mode] / max(1, done[mode]) * 1000 for mode in cpu}
    inproc = metrics_in_process()
    return {"requests": n, "rounds": rounds, "scrapes": scrapes, "scrape_bytes": size, **inproc,
            "hook_percent_of_request": round(inproc["hook_us_per_request"] / 10 / per["off"], 2),
            **{f"cpu_ms_per_request_{k}": round(v, 4) for k, v in per.items()},
            "overhead_on_percent": round(100 * (per["on"] / per["off"] - 1), 2),
            "overhead_scraped_percent": round(100 * (per["scraped"] / per["off"] - 1), 2)}


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [f"# Keyloom benchmark ({r['mode']})", "",
           f"{r['date']} · {m['cpu']} · {m['cores']} cores · Python {m['python']} · {m['os']} · "
           f"event loop: {r['event_loop']}", "",
           "Load generator, fake Gemini and Keyloom each in their own process on this machine, over loopback.", "",
           "## Non-streaming completions", "",
           "| concurrency | native rps | Keyloom rps | ratio | native p50/p99 ms | Keyloom p50/p99 ms | "
           "added p50/p99 ms | errors | Keyloom CPU ms/request |",
           "|---|---|---|---|---|---|---|---|---|"]
    for x in r["non_streaming"]:
        out.append(f"| {x['concurrency']} | {x['native_rps']} | {x['keyloom_rps']} | {x['throughput_ratio']} | "
                   f"{x['native_p50_ms']:.2f} / {x['native_p99_ms']:.2f} | {x['keyloom_p50_ms']:.2f} / "
                   f"{x['keyloom_p99_ms']:.2f} | {x['added_p50_ms']:.2f} / {x['added_p99_ms']:.2f} | "
                   f"{x['keyloom_errors']} | {x['keyloom_cpu_ms_per_request']:.3f} |")
    s = r["streaming"]
    out += ["", "## Real streaming (500-word answer, 50 events)", "",
            "| native TTFC p50 | Keyloom TTFC p50 | added TTFC p50 / p99 | native chunks/s | Keyloom chunks/s | "
            "whole answers |", "|---|---|---|---|---|---|",
            f"| {s['native_ttfc_p50_ms']:.2f} ms | {s['keyloom_ttfc_p50_ms']:.2f} ms | {s['added_ttfc_p50_ms']:.2f} / "
            f"{s['added_ttfc_p99_ms']:.2f} ms | {s['native_chunks_per_s']} | {s['keyloom_chunks_per_s']} | "
            f"{s['whole_answers']}/{s['requests']} |"]
    h = r["fake_streaming_hold"]
    out += ["", f"## Fake streaming: {h['clients']} clients held on a {h['upstream_wait_s']:g}-second reply "
                f"(connecting over {h['ramp_s']:g} s)", "",
            "| peak RSS | CPU while holding | longest gap between keep-alives (p99) | gap / interval | "
            "first byte p50 / p99 / max | whole answers | errors |",
            "|---|---|---|---|---|---|---|",
            f"| {h['peak_rss_mb']} MB (from {h['rss_before_mb']}) | {h['cpu_percent_of_one_core']}% of one core | "
            f"{h['max_keepalive_gap_s']} s ({h['keepalive_gap_p99_s']} s) | {h['max_gap_over_interval']} | "
            f"{h['first_byte_p50_s']} / {h['first_byte_p99_s']} / {h['max_first_byte_s']} s | "
            f"{h['whole_answers']}/{h['clients']} | {h['errors']} |"]
    out += ["", "## The same answer through each API (concurrency 16)", "",
            "| API | stream | requests | rps | p50 ms | Keyloom CPU ms/request | CPU vs chat | errors |",
            "|---|---|---|---|---|---|---|---|"]
    for x in r.get("dialects", []):
        out.append(f"| {x['api']} | {'real, 50 events' if x['stream'] else 'no'} | {x['requests']} | {x['rps']} | "
                   f"{x['p50_ms']:.2f} | {x['cpu_ms_per_request']:.3f} | {x['cpu_vs_chat']:.2f} | {x['errors']} |")
    k = r["soak"]
    out += ["", f"## Soak: {k['requests']:,} mixed requests", "",
            "| RSS before → after | open fds before → after | statuses | seconds |", "|---|---|---|---|",
            f"| {k['rss_before_mb']} → {k['rss_after_mb']} MB | {k['fds_before']} → {k['fds_after']} | "
            f"{', '.join(f'{s}: {n}' for s, n in sorted(k['statuses'].items()))} | {k['seconds']} |", ""]
    mc = r.get("metrics_cost")
    if mc:
        out += ["## What GET /metrics costs (chat, non-streaming, concurrency 16)", "",
                "| METRICS=false | on, never scraped | on, scraped every second | overhead (never / scraped) | "
                "requests × rounds | scrapes (bytes each) |", "|---|---|---|---|---|---|",
                f"| {mc['cpu_ms_per_request_off']:.3f} ms | {mc['cpu_ms_per_request_on']:.3f} ms | "
                f"{mc['cpu_ms_per_request_scraped']:.3f} ms | {mc['overhead_on_percent']:+.1f}% / "
                f"{mc['overhead_scraped_percent']:+.1f}% | {mc['requests']} × {mc['rounds']} | "
                f"{mc['scrapes']} ({mc['scrape_bytes']}) |", "",
                f"In-process (no other process's noise): the per-request hook costs {mc['hook_us_per_request']} µs "
                f"({mc['hook_percent_of_request']}% of a request's CPU with metrics off); one scrape of a pool of "
                f"{mc['scrape_keys']} keys with two models each in use takes {mc['scrape_ms']} ms "
                f"({mc['scrape_bytes_big']:,} bytes).", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the same scenarios, small (seconds): for CI")
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    interval = 1.0
    fake, fake_port = start_fake()
    procs = [fake]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            extra = ",".join([STREAM_MODEL, hold_model(plan)])  # the fake's benchmark models are not listed
            kl, kl_port = start_keyloom(fake_port, Path(tmp) / "a", make_keys(3), EXTRA_MODELS=extra,
                                        FAKE_STREAMING="true", FAKE_STREAMING_INTERVAL=str(interval))
            real, real_port = start_keyloom(fake_port, Path(tmp) / "b", make_keys(3), EXTRA_MODELS=extra,
                                            FAKE_STREAMING="false")
            procs += [kl, real]
            with urllib.request.urlopen(f"http://127.0.0.1:{kl_port}/health", timeout=5) as resp:
                event_loop = json.load(resp).get("event_loop", "unknown")
            result = {"mode": "quick" if args.quick else "full", "date": time.strftime("%Y-%m-%d %H:%M"),
                      "machine": machine(), "event_loop": event_loop}
            print("non-streaming…", flush=True)
            result["non_streaming"] = non_streaming(plan, fake_port, kl.pid, kl_port)
            print("real streaming…", flush=True)
            result["streaming"] = streaming(plan, fake_port, real_port)
            print("each API…", flush=True)
            result["dialects"] = dialects(plan, kl.pid, kl_port, real.pid, real_port)
            print("soak…", flush=True)
            result["soak"] = soak(plan, kl.pid, kl_port)
            print("fake streaming hold…", flush=True)
            result["fake_streaming_hold"] = holding(plan, kl.pid, kl_port, interval)
            print("metrics cost…", flush=True)
            result["metrics_cost"] = metrics_cost(plan, fake_port, Path(tmp))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "latest"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
