"""Start-up and shutdown as a real process (issue 12): every start-up failure is one clear line and a non-zero
exit, never a hang; one process per DATA_DIR; a clock that jumps ahead deletes nothing; an aborted upload does not
hold up a stop; the admin password is separate and said once; DEBUG logs carry no secrets; strangers' bodies are
not held in memory."""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import KEYS, PASSWORD
from tests.support.proc import KeyloomProcess
from tests.support.wait import wait_until

EXIT_WITHIN = 60  # seconds: far more than a failing start needs; it only turns a hang into a failure
ADMIN = "startup-admin-password-1"


def env_for(fake, **extra) -> dict[str, str]:
    env = {"GEMINI_API_KEYS": ",".join(KEYS), "GEMINI_BASE_URL": fake.base_url, "PASSWORD": PASSWORD,
           "ADMIN_PASSWORD": ADMIN, "MAX_REQUESTS_PER_MINUTE": "0", "MAX_REQUESTS_PER_DAY_PER_IP": "0",
           "ACCESS_LOG": "false", "FLUSH_INTERVAL": "0.2"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def fails_to_start(p: KeyloomProcess) -> tuple[int, str]:
    """The process must exit by itself; → (exit code, its output)."""
    try:
        code = p.proc.wait(EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        p.proc.kill()
        raise AssertionError(f"Keyloom did not exit after a start-up failure:\n{p.output()}") from None
    p._reader.join(5)
    out = p.output()
    assert code != 0 and "Traceback" not in out, out
    return code, out


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "cannot start" in line]


# -- 10. start-up never hangs -------------------------------------------------------------------------------

def test_port_in_use(fake, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out = fails_to_start(KeyloomProcess(env=env_for(fake, PORT=port), data_dir=tmp_path))
    lines = error_lines(out)
    assert code == 2 and len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "PORT" in lines[0], out


def test_an_address_that_cannot_be_bound(fake, tmp_path):
    # TEST-NET-1 is no address of this machine: binding fails at once and sends nothing anywhere
    code, out = fails_to_start(KeyloomProcess(env=env_for(fake, HOST="192.0.2.1"), data_dir=tmp_path))
    lines = error_lines(out)
    assert code == 2 and len(lines) == 1 and "192.0.2.1" in lines[0] and "HOST" in lines[0], out


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write to: permissions for a normal user, the immutable flag for root
    (root ignores permissions)."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without the immutable flag: no read-only directory here")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)


@pytest.mark.parametrize("passwords", ["set", "generated"])
def test_a_read_only_data_dir(fake, tmp_path, read_only_dir, passwords):
    env = env_for(fake, DATA_DIR=read_only_dir)
    if passwords == "generated":
        del env["PASSWORD"], env["ADMIN_PASSWORD"]
    code, out = fails_to_start(KeyloomProcess(env=env, data_dir=read_only_dir))
    lines = [line for line in out.splitlines() if "cannot start" in line]
    assert code == 2 and len(lines) == 1 and str(read_only_dir) in lines[0] and "DATA_DIR" in lines[0], out


@pytest.mark.parametrize("content", [b"this is not a database, just text\n" * 100,
                                     b"SQLite format 3\x00" + os.urandom(8192)])
def test_a_file_that_is_not_a_usable_database_is_reported_and_left_alone(fake, tmp_path, content):
    db = tmp_path / "keyloom.sqlite3"
    db.write_bytes(content)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, out = fails_to_start(KeyloomProcess(env=env_for(fake), data_dir=tmp_path))
    lines = error_lines(out)
    assert code == 2 and len(lines) == 1 and str(db) in lines[0] and "move it aside" in lines[0], out
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # never replaced or deleted
    assert not (tmp_path / "keyloom.sqlite3-wal").exists() or (tmp_path / "keyloom.sqlite3-wal").stat().st_size == 0


def test_a_database_locked_by_another_program(fake, tmp_path):
    p = KeyloomProcess(env=env_for(fake), data_dir=tmp_path).wait_ready()
    assert p.stop() == 0
    holder = sqlite3.connect(tmp_path / "keyloom.sqlite3", isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, out = fails_to_start(KeyloomProcess(env=env_for(fake), data_dir=tmp_path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    lines = error_lines(out)
    assert code == 2 and len(lines) == 1 and "locked" in lines[0], out


# -- 11. one writer per DATA_DIR ------------------------------------------------------------------------------

def test_a_second_process_on_one_data_dir_is_refused_and_a_crash_frees_it(fake, tmp_path):
    first = KeyloomProcess(env=env_for(fake), data_dir=tmp_path).wait_ready()
    try:
        code, out = fails_to_start(KeyloomProcess(env=env_for(fake), data_dir=tmp_path))
        lines = error_lines(out)
        assert code == 2 and len(lines) == 1 and str(tmp_path) in lines[0], out
        assert f"pid {first.proc.pid}" in lines[0]
    finally:
        first.stop(signal.SIGKILL)  # a crash: the OS drops the lock with the process
    again = KeyloomProcess(env=env_for(fake), data_dir=tmp_path).wait_ready()
    assert again.stop() == 0


# -- 12. a clock that jumps forward does not delete history -----------------------------------------------------

def test_a_start_with_the_clock_far_ahead_keeps_the_history(fake, tmp_path):
    env = env_for(fake, API_KEY_DAILY_LIMIT=0)
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        for _ in range(3):
            r = httpx.post(p.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {PASSWORD}"},
                           json={"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 200
        assert httpx.post(p.url + "/api/login", json={"password": ADMIN}).status_code == 200
    finally:
        assert p.stop() == 0

    def counts() -> tuple[int, int, int]:
        with sqlite3.connect(tmp_path / "keyloom.sqlite3") as c:
            return tuple(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
                         for t in ("request_log", "request_daily", "audit"))
    before = counts()
    assert before[0] == 3 and before[2] >= 1
    for days in (10, 462):
        p = KeyloomProcess("--clock-offset", str(days * 86400), env=env, data_dir=tmp_path).wait_ready()
        try:
            # the first flush tick prunes (nothing was pruned yet in this process); wait until it has
            wait_until(lambda url=p.url: httpx.get(url + "/health").json()["store"]["prunes"] >= 1, "a prune")
        finally:
            assert p.stop() == 0
        assert counts() == before, days


# -- 13. an aborted upload does not hold up a stop ------------------------------------------------------------

def test_sigterm_after_an_aborted_upload_does_not_wait_for_it(fake, tmp_path):
    p = KeyloomProcess(env=env_for(fake, SHUTDOWN_GRACE=600), data_dir=tmp_path).wait_ready()
    s = socket.create_connection(("127.0.0.1", p.port))
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PASSWORD}\r\n"
              "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"model\"".encode())
    wait_until(lambda: httpx.get(p.url + "/health").json()["in_flight"] == 1, "the upload to be in flight")
    s.close()
    wait_until(lambda: httpx.get(p.url + "/health").json()["in_flight"] == 0, "the aborted upload to be dropped")
    assert p.stop(timeout=EXIT_WITHIN) == 0  # with a leaked count it would wait SHUTDOWN_GRACE (600 s)
    assert "for 0 request(s) in flight" in p.output()


# -- 1. the admin password is separate, said once, and which opens what is logged -------------------------------

def test_the_admin_password_is_generated_apart_from_the_client_password(fake, tmp_path):
    env = env_for(fake)
    del env["ADMIN_PASSWORD"]
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        admin = (tmp_path / "admin_password").read_text().strip()
        assert admin and admin != PASSWORD and (tmp_path / "admin_password").stat().st_mode & 0o777 == 0o600
        assert httpx.post(p.url + "/api/login", json={"password": PASSWORD}).status_code == 401
        assert httpx.post(p.url + "/api/login", json={"password": admin}).status_code == 200
    finally:
        assert p.stop() == 0
    out = p.output()
    assert out.count(admin) == 1 and "dashboard" in out.lower()  # shown once, in the banner
    which = [line for line in out.splitlines() if "opens the API" in line]
    assert len(which) == 1 and PASSWORD not in which[0] and admin not in which[0]
    assert "admin_password" in which[0] and "PASSWORD" in which[0]
    again = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        assert httpx.post(again.url + "/api/login", json={"password": admin}).status_code == 200
    finally:
        assert again.stop() == 0
    assert admin not in again.output()  # reused, not shown again


# -- 14. DEBUG logs carry no session secrets, CSRF tokens or conversation text ----------------------------------

def test_debug_logging_does_not_print_sql_parameters(fake, tmp_path):
    p = KeyloomProcess(env=env_for(fake, LOG_LEVEL="DEBUG"), data_dir=tmp_path).wait_ready()
    try:
        with httpx.Client(base_url=p.url) as http:
            r = http.post("/chat/login", json={"password": PASSWORD})
            csrf = r.json()["csrf"]
            r = http.post("/api/conversations", headers={"X-CSRF-Token": csrf},
                          json={"title": "t", "messages": [{"role": "user", "content": "secret-diary-entry-4711"}]})
            assert r.status_code == 201
    finally:
        assert p.stop() == 0
    out = p.output()
    assert "DEBUG" in out  # the level is in force
    assert csrf not in out and "secret-diary-entry-4711" not in out


# -- 4. what strangers' bodies make the process hold ---------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_forty_unauthenticated_uploads_hold_little_memory(fake, tmp_path):
    """Before: 40 connections each sending 32 MiB took the process from ~100 MB to 1.4 GB."""
    p = KeyloomProcess(env=env_for(fake), data_dir=tmp_path).wait_ready()
    try:
        before = rss_mb(p.proc.pid)
        fds_before = fds(p.proc.pid)
        block = b"x" * 65536
        sent = [0]

        def upload(path: str) -> None:
            s = socket.create_connection(("127.0.0.1", p.port))
            s.settimeout(30)
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {32 * 1024 * 1024}\r\n\r\n".encode())
            try:
                for _ in range(512):
                    s.sendall(block)
                    sent[0] += len(block)
            except OSError:
                pass  # answered and closed: the body was not wanted
            finally:
                s.close()
        paths = ["/api/status", "/chat/login", "/v1/chat/completions", "/no/such/path"]
        threads = [threading.Thread(target=upload, args=(paths[i % 4],)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        grew = rss_mb(p.proc.pid) - before
        assert httpx.get(p.url + "/health").status_code == 200
        # and every connection was let go: the descriptors come back to where they were
        wait_until(lambda: fds(p.proc.pid) <= fds_before + 2, "the connections to be closed")
    finally:
        assert p.stop() == 0
    assert grew < 30, f"RSS grew by {grew:.1f} MB"
