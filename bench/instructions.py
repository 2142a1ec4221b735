"""Instructions per request, counted by valgrind's callgrind: repeatable where timings are not.

`python -m bench.instructions [NAME=VALUE …]` starts Keyloom under callgrind (UVLOOP off, so the
event loop is Python code callgrind sees whole) in front of the fake Gemini, sends 50 and then, in
a second process, 250 sequential non-streaming chat requests, and prints the difference divided
by 200: start-up and shutdown cancel out. NAME=VALUE pairs are extra settings (for A/B runs, e.g.
RANDOM_STRING=false). Needs valgrind (Debian's package); takes about a minute. Two runs of the same
code differ by up to about 3% (timers and background refreshes run a varying number of times).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import PASSWORD, ROOT, free_port, make_keys, start_fake, wait_http

BODY = json.dumps({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "hello"}]}).encode()


def run(fake_port: int, n: int, extra: dict[str, str]) -> int:
    d = Path(tempfile.mkdtemp())
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(d), "GEMINI_API_KEYS": ",".join(make_keys(4)),
           "GEMINI_BASE_URL": f"http://127.0.0.1:{fake_port}", "PASSWORD": PASSWORD, "PORT": str(port),
           "HOST": "127.0.0.1", "DATA_DIR": str(d), "ACCESS_LOG": "false", "LOG_LEVEL": "WARNING",
           "MAX_REQUESTS_PER_MINUTE": "0", "MAX_REQUESTS_PER_DAY_PER_IP": "0", "API_KEY_DAILY_LIMIT": "0",
           "UVLOOP": "false", "INFLIGHT_SHARING": "false", **extra}
    out = d / "callgrind.out"
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "run.py"],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port, "/health", timeout=300)
    for _ in range(n):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=BODY,
                                     headers={"Authorization": f"Bearer {PASSWORD}",
                                              "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=120).read()
    p.terminate()
    p.wait(timeout=300)
    m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(errors="replace"), re.M)
    if m is None:
        raise RuntimeError("callgrind wrote no totals")
    return int(m.group(1))


def main() -> None:
    extra = dict(a.split("=", 1) for a in sys.argv[1:])
    fake, fake_port = start_fake()
    try:
        with ThreadPoolExecutor(2) as pool:  # instruction counts do not depend on the other process
            small, large = pool.map(lambda n: run(fake_port, n, extra), (50, 250))
    finally:
        fake.terminate()
    print(f"{(large - small) / 200:,.0f} instructions per request  (settings: {extra or 'defaults'})")


if __name__ == "__main__":
    main()
