"""WORKERS=N (server/workers.py): N processes serving one port through SO_REUSEPORT, only with REDIS_URL; a dead
worker is replaced, SIGTERM stops them all, a start that cannot succeed ends with one clear line. And every
answer of /health and /metrics says which replica and worker gave it.

The multi-process tests run the real `python run.py` against a real redis-server (tests/support/redis_server.py)
and wait on conditions (tests/support/wait.py), never on fixed sleeps.
"""
from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import redis_server
from tests.support.proc import KeyloomProcess, free_port
from tests.support.wait import wait_until

PASSWORD = "client-password-for-workers-0123"
ADMIN = "admin-password-for-workers-0123"
BASE = {"PASSWORD": PASSWORD, "ADMIN_PASSWORD": ADMIN, "LOG_LEVEL": "INFO", "SHUTDOWN_GRACE": "5"}
ATTEMPTS = 400  # fresh connections before giving up on seeing every worker: 2^-399 odds of a false failure


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis_server.RedisServer]:
    redis_server.require()
    server = redis_server.RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


def children(parent: int) -> set[int]:
    """Live (not zombie) processes whose parent is `parent`, from /proc."""
    found = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            state, ppid = (d / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == parent and state != "Z":
            found.add(int(d.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def workers_seen(url: str, want: set[int]) -> dict[int, dict]:
    """Ask /health on fresh connections (the kernel spreads them over the workers' sockets) until every worker
    in `want` has answered; → worker number → its /health."""
    seen: dict[int, dict] = {}
    for _ in range(ATTEMPTS):
        r = httpx.get(url + "/health", headers={"Connection": "close"}, timeout=10)
        assert r.status_code == 200
        body = r.json()
        seen[body["worker"]] = body
        if want <= set(seen):
            return seen
    raise AssertionError(f"only workers {sorted(seen)} answered in {ATTEMPTS} connections, wanted {sorted(want)}")


def start_workers(tmp_path: Path, redis_url: str, **env: str) -> KeyloomProcess:
    p = KeyloomProcess(env={**BASE, "WORKERS": "2", "REDIS_URL": redis_url, "REPLICA_NAME": "replica-a",
                            "REDIS_PREFIX": f"kl-{tmp_path.name}:", **env}, data_dir=tmp_path)
    try:
        return p.wait_ready(timeout=60)
    except BaseException:
        p.stop(signal.SIGKILL)
        raise


def ended(p: KeyloomProcess, timeout: float = 60) -> tuple[int, str]:
    code = p.proc.wait(timeout)
    p._reader.join(5)
    return code, p.output()


# -- refusals ---------------------------------------------------------------------------------------------

def test_workers_without_redis_url_stop_start_up_with_one_line_naming_both(tmp_path):
    code, out = ended(KeyloomProcess(env={**BASE, "WORKERS": "2"}, data_dir=tmp_path))
    assert code == 2
    assert out.strip().count("\n") == 0, out  # one line, no traceback, nothing forked
    assert "WORKERS=2" in out and "REDIS_URL" in out and "Traceback" not in out


def test_a_port_in_use_stops_the_workers_start_with_one_clear_line(tmp_path, redis):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = KeyloomProcess(env={**BASE, "WORKERS": "2", "REDIS_URL": redis.url, "PORT": str(port)},
                           data_dir=tmp_path)
        code, out = ended(p)
    assert code == 2, out
    assert f"cannot listen on 127.0.0.1:{port}" in out and "Traceback" not in out
    assert "starting 2 workers" not in out and "[w0]" not in out  # refused before any worker was forked


def test_workers_that_cannot_reach_redis_end_the_start_instead_of_looping(tmp_path):
    closed = free_port()  # nothing listens there
    p = KeyloomProcess(env={**BASE, "WORKERS": "2", "REDIS_URL": f"redis://127.0.0.1:{closed}/0",
                            "REDIS_START_TIMEOUT": "0"}, data_dir=tmp_path)
    code, out = ended(p)
    assert code == 2, out
    assert "REDIS_START_TIMEOUT" in out and "before it could serve" in out and "Traceback" not in out
    assert "starting a new one" not in out  # a start that cannot succeed is not retried


# -- a group of workers ------------------------------------------------------------------------------------

def test_two_workers_answer_on_one_port_and_sigterm_stops_them_all(tmp_path, redis):
    p = start_workers(tmp_path, redis.url)
    pids = wait_until(lambda: (c := children(p.proc.pid)) and len(c) == 2 and c, "two workers")
    seen = workers_seen(p.url, {0, 1})
    for n in (0, 1):
        assert seen[n]["replica"] == "replica-a" and seen[n]["store"]["kind"] == "redis"

    assert p.stop(signal.SIGTERM, timeout=60) == 0
    assert not any(alive(pid) for pid in pids)  # the parent waited for each: no orphan left serving
    with pytest.raises(httpx.ConnectError):
        httpx.get(p.url + "/health", timeout=5)
    out = p.output()
    assert "Traceback" not in out
    assert out.count("stopped: counters written") == 2  # each worker stopped gracefully, as one Keyloom does


def test_a_worker_killed_with_sigkill_is_replaced(tmp_path, redis):
    p = start_workers(tmp_path, redis.url)
    try:
        # both serving, not only started: a worker that dies before it serves ends the start (another path)
        wait_until(lambda: "2 workers serving" in p.output(), "both workers serving")
        before = wait_until(lambda: (c := children(p.proc.pid)) and len(c) == 2 and c, "two workers")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        after = wait_until(lambda: (c := children(p.proc.pid)) and len(c) == 2 and victim not in c and c,
                           "a new worker in place of the killed one", timeout=60)
        assert len(after & before) == 1  # the other worker kept running
        workers_seen(p.url, {0, 1})      # and the new one serves under the killed one's number
        assert "exited (signal SIGKILL); starting a new one" in p.output()
    finally:
        assert p.stop(signal.SIGTERM, timeout=60) == 0, p.output()


def test_sigusr1_to_the_parent_prints_its_stacks_and_each_workers_and_all_go_on(tmp_path, redis):
    """README: `kill -USR1 <pid>` prints every thread's stack; with WORKERS, the parent's pid is the one people
    have, so it prints its own and passes the signal on to each worker (which SIGUSR1 would otherwise kill)."""
    p = start_workers(tmp_path, redis.url)
    try:
        wait_until(lambda: "2 workers serving" in p.output(), "both workers serving")
        pids = wait_until(lambda: (c := children(p.proc.pid)) and len(c) == 2 and c, "two workers")
        before = len(p.output())
        p.proc.send_signal(signal.SIGUSR1)
        # three dumps, each ending in the main thread's outermost frame (run.py)
        wait_until(lambda: p.output()[before:].count("run.py") >= 3, "the parent's and both workers' stacks")
        out = p.output()[before:]
        assert out.count("Current thread") == 3 and "server/workers.py" in out, out
        assert children(p.proc.pid) == pids  # nobody died of it
        workers_seen(p.url, {0, 1})
    finally:
        assert p.stop(signal.SIGTERM, timeout=60) == 0, p.output()


# -- which process answered (one process, in-process, SQLite) ----------------------------------------------

def test_health_and_metrics_name_the_replica_worker_and_store(start_keyloom):
    kl = start_keyloom(REPLICA_NAME="replica-b", ADMIN_PASSWORD=ADMIN)
    with kl.http() as http:
        health = http.get("/health").json()
        metrics = http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert health["replica"] == "replica-b" and health["worker"] == 0 and health["store"]["kind"] == "sqlite"
    assert "flushes" in health["store"] and "keys" in health  # the existing fields stay
    assert metrics.status_code == 200, metrics.text
    info = [s for f in text_string_to_metric_families(metrics.text) if f.name == "keyloom_info" for s in f.samples]
    assert len(info) == 1 and info[0].value == 1
    assert {k: info[0].labels[k] for k in ("replica", "worker", "store")} == \
        {"replica": "replica-b", "worker": "0", "store": "sqlite"}


def test_without_replica_name_the_host_name_is_shown(start_keyloom):
    kl = start_keyloom()
    with kl.http() as http:
        assert http.get("/health").json()["replica"] == (socket.gethostname() or "replica")


# -- the docker compose example (conf/docker-compose.redis.yml, conf/nginx.redis.conf) ---------------------

def test_the_compose_example_runs_two_replicas_one_persistent_redis_and_nginx_forwarding_the_client():
    import yaml
    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "conf" / "docker-compose.redis.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    replicas = {name: s for name, s in services.items() if name.startswith("keyloom")}
    assert len(replicas) == 2
    for s in replicas.values():  # merge keys resolved: each replica has the whole environment
        env = s["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:") and env["TRUST_PROXY_HEADERS"] == "1"
        assert "PASSWORD" in env and "ADMIN_PASSWORD" in env  # the same on every replica, never generated
    assert len({s["environment"]["REPLICA_NAME"] for s in replicas.values()}) == 2
    redis = services["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/data" for v in redis["volumes"])
    nginx = services["nginx"]
    assert any(v.split(":")[0] == "./nginx.redis.conf" for v in nginx["volumes"])

    conf = (root / "conf" / "nginx.redis.conf").read_text(encoding="utf-8")
    lines = {line.split("#")[0].strip() for line in conf.splitlines()}
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in lines
    assert "proxy_buffering off;" in lines and "proxy_read_timeout 600s;" in lines
    for name in replicas:
        assert f"server {name}:7860;" in lines
    for readme in ("README.md", "README.zh-CN.md"):
        text = (root / readme).read_text(encoding="utf-8")
        assert "conf/docker-compose.redis.yml" in text and "conf/nginx.redis.conf" in text
