"""The dashboard's own state shared through Redis (issue 16): sessions, live settings, keys added and removed on
the dashboard, key notes. Two Keyloom instances with one REDIS_URL against a real redis-server, through the real
HTTP path: what one does, the other sees (waited for as a condition, never a sleep). Keys added on the dashboard
are stored encrypted with KEY_ENCRYPTION_SECRET: the whole Redis (its append-only file and every value) holds
no key in any spelling; without the secret adding keys is refused, with a wrong one they are not loaded."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from server.auth import unshared_passwords
from server.redact import fingerprint
from tests.conftest import KEYS, PASSWORD, make_key
from tests.support.admin import AdminClient
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until

ADMIN = "admin-password-redis-0123"
SECRET = "operator-kept-secret-for-dashboard-keys"
NEW_KEY = make_key(42)
NEW_FP = fingerprint(NEW_KEY)



@pytest.fixture
def pair(start_keyloom, redis_server):  # type: ignore[no-untyped-def]
    """start(**settings) → a Keyloom on the shared Redis, under a prefix of this test's own."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    names = iter(range(1, 100))

    def start(**settings):  # type: ignore[no-untyped-def]
        # each its own replica name: in one test process they share the host name and the process id
        return start_keyloom(REDIS_URL=redis_server.url, REDIS_PREFIX=prefix, ADMIN_PASSWORD=ADMIN,
                             REPLICA_NAME=f"replica-{next(names)}", **settings)

    start.prefix = prefix  # type: ignore[attr-defined]
    return start


def status(http: httpx.Client, url: str, path: str, **kw) -> int:  # type: ignore[no-untyped-def]
    return http.get(url + path, **kw).status_code


def test_a_sign_in_on_one_replica_works_on_the_other(pair):
    a, b = pair(), pair()
    admin = AdminClient(a.url, ADMIN)
    cookie = admin.http.cookies.get("keyloom_session")
    assert cookie
    with httpx.Client(timeout=20, cookies={"keyloom_session": cookie}) as other:
        wait_until(lambda: status(other, b.url, "/api/status") == 200, "the session to reach the other replica")
        # the same CSRF token is good there: a state-changing call on b with a's session
        r = other.put(b.url + "/api/settings", json={"FAKE_STREAMING": False},
                      headers={"X-CSRF-Token": admin.csrf})
        assert r.status_code == 200, r.text
        # signed out on a: refused on b as well
        assert admin.ok("POST", "logout")["signed_out"] is True
        wait_until(lambda: status(other, b.url, "/api/status") == 401, "the sign-out to reach the other replica")
    # the chat playground's sessions too (signed with PASSWORD)
    with httpx.Client(timeout=20) as chat:
        r = chat.post(a.url + "/chat/login", json={"password": PASSWORD})
        assert r.status_code == 200, r.text
        chat_cookie = chat.cookies.get("keyloom_chat")
    with httpx.Client(timeout=20, cookies={"keyloom_chat": chat_cookie}) as other:
        wait_until(lambda: status(other, b.url, "/chat/session") == 200, "the chat session to reach the other")
    # a replica started later reads the sessions at start; a forged cookie is refused everywhere
    c = pair()
    with httpx.Client(timeout=20, cookies={"keyloom_chat": chat_cookie}) as late:
        assert status(late, c.url, "/chat/session") == 200
    with httpx.Client(timeout=20, cookies={"keyloom_session": cookie[:-4] + "0000"}) as forged:
        assert status(forged, c.url, "/api/status") == 401


def test_a_setting_changed_on_one_replica_is_in_force_on_the_other(pair):
    a, b = pair(), pair()
    assert b.kl.settings.FAKE_STREAMING is True and b.kl.settings.UPSTREAM_TIMEOUT == 10
    admin_a = AdminClient(a.url, ADMIN)
    admin_a.ok("PUT", "settings", {"FAKE_STREAMING": False, "UPSTREAM_TIMEOUT": 33})
    wait_until(lambda: b.kl.settings.FAKE_STREAMING is False, "the change to reach the other replica")
    # through the same path as a change on b's own dashboard: copied values follow too
    assert b.kl.settings.UPSTREAM_TIMEOUT == 33 and b.kl.gemini.timeout == 33
    admin_b = AdminClient(b.url, ADMIN)
    shown = {s["name"]: s for s in admin_b.ok("GET", "settings")["settings"]}
    assert shown["FAKE_STREAMING"]["value"] == "false" and shown["FAKE_STREAMING"]["source"] == "dashboard"
    # reset on b: back to the environment on a
    admin_b.ok("DELETE", "settings/FAKE_STREAMING")
    wait_until(lambda: a.kl.settings.FAKE_STREAMING is True, "the reset to reach the other replica")
    assert a.kl.settings.UPSTREAM_TIMEOUT == 33  # the other change stays
    # a replica started now starts with what the cluster has
    assert pair().kl.settings.UPSTREAM_TIMEOUT == 33


def redis_holds(server: RedisServer, prefix: str, secrets: list[str]) -> list[str]:
    """Where any of `secrets` (in any case, percent-encoded) shows in Redis: its files (the append-only log
    has every write) and every value under `prefix`, read by type."""
    forms: set[bytes] = set()
    for s in secrets:
        for f in (s, s.lower(), s.upper(), quote(s, safe=""), quote(s, safe="").lower()):
            forms.add(f.encode())
    found = []
    files = [p for p in Path(server.dir).rglob("*") if p.is_file()]
    assert any(prefix.encode() + b"storedkey" in p.read_bytes() for p in files), "the append-only log is not read"
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {f!r}" for f in forms if f in data or f in data.lower() or f in data.upper()]
    import redis as sync_redis
    r = sync_redis.Redis(host="127.0.0.1", port=server.port)
    try:
        keys = list(r.scan_iter(match=prefix.encode() + b"*"))
        assert keys, "nothing stored under the prefix: the search would prove nothing"
        for key in keys:
            kind = r.type(key)
            if kind == b"string":
                values = [r.get(key)]
            elif kind == b"hash":
                values = [b"%s=%s" % (k, v) for k, v in r.hgetall(key).items()]
            elif kind == b"zset":
                values = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
            elif kind == b"set":
                values = list(r.smembers(key))
            elif kind == b"list":
                values = r.lrange(key, 0, -1)
            elif kind == b"stream":
                values = [repr(e).encode() for e in r.xrange(key)]
            else:
                values = [r.dump(key) or b""]
            for v in values:
                v = v or b""
                found += [f"{key!r}: {f!r}" for f in forms if f in v or f in v.lower() or f in v.upper()]
    finally:
        r.close()
    return found


def test_keys_added_and_removed_on_one_replica_join_and_leave_the_other(pair, fake, redis_server):
    fake.allow(*KEYS, NEW_KEY)
    a = pair(KEY_ENCRYPTION_SECRET=SECRET)
    b = pair(KEY_ENCRYPTION_SECRET=SECRET, GEMINI_API_KEYS="")  # b serves only what the dashboard adds
    assert not b.kl.pool.keys
    admin_a = AdminClient(a.url, ADMIN)
    r = admin_a.ok("POST", "keys", {"keys": f"{NEW_KEY}\n{KEYS[0]}"})
    assert [k["fp"] for k in r["added"]] == [NEW_FP] and len(r["duplicates"]) == 1
    wait_until(lambda: b.kl.pool.get(NEW_FP) is not None, "the added key to join the other replica's pool")
    assert b.kl.pool.get(NEW_FP).source == "dashboard"
    # b serves with it
    fake.requests.clear()
    with httpx.Client(base_url=b.url, headers=b.auth(), timeout=20) as http:
        reply = http.post("/v1/chat/completions",
                          json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    assert [rec.key for rec in fake.generate_calls()] == [NEW_KEY]
    # a note written on b is read on a (no copy in memory: both read Redis)
    AdminClient(b.url, ADMIN).ok("PUT", f"keys/{NEW_FP}/meta", {"tags": ["paid"], "note": "from Bob"})
    assert admin_a.ok("GET", "keys/meta")["keys"][NEW_FP]["tags"] == ["paid"]

    # nowhere in Redis in any form (encrypted, the notice names no key); the env keys never went there either
    a.loop.run(a.kl.flusher.flush())
    assert redis_holds(redis_server, pair.prefix, [NEW_KEY, *KEYS]) == []
    probe = make_key(99)  # the search finds a key where there is one (upper-cased, percent-encoded)
    r = redis_server.sync_client()
    try:
        r.set(pair.prefix + "probe", "x" + quote(probe.upper(), safe="") + "x")
        assert redis_holds(redis_server, pair.prefix, [probe])
        stored = r.hgetall(pair.prefix + "storedkey")
    finally:
        r.close()
    assert list(stored) == [NEW_FP] and '"s":"v1.' in stored[NEW_FP]

    # a replica started later decrypts it; removed on b → gone from a, and from the later one
    c = pair(KEY_ENCRYPTION_SECRET=SECRET)
    assert c.kl.pool.get(NEW_FP) is not None
    AdminClient(b.url, ADMIN).ok("DELETE", f"keys/{NEW_FP}")
    wait_until(lambda: a.kl.pool.get(NEW_FP) is None and c.kl.pool.get(NEW_FP) is None,
               "the removed key to leave the other pools")
    assert NEW_FP not in admin_a.ok("GET", "keys/meta")["keys"]
    # an environment key removed on a stays out on b's side too, and in Redis as removed
    env_fp = fingerprint(KEYS[1])
    admin_a.ok("DELETE", f"keys/{env_fp}")
    wait_until(lambda: c.kl.pool.get(env_fp) is None, "the removed environment key to leave the other pool")
    assert pair(KEY_ENCRYPTION_SECRET=SECRET).kl.pool.get(env_fp) is None


def test_without_the_secret_adding_keys_is_refused_and_the_rest_works(pair, fake):
    a = pair()
    admin = AdminClient(a.url, ADMIN)
    r = admin.call("POST", "keys", {"keys": NEW_KEY})
    assert r.status_code == 409, r.text
    body = r.json()["error"]
    assert "KEY_ENCRYPTION_SECRET" in body["message"] and body["code"] == "key_encryption_secret_missing"
    assert NEW_KEY not in r.text and a.kl.pool.get(NEW_FP) is None
    # the rest of the dashboard works: settings, notes, removing a key
    admin.ok("PUT", "settings", {"FAKE_STREAMING": False})
    admin.ok("PUT", f"keys/{fingerprint(KEYS[0])}/meta", {"tags": ["x"]})
    admin.ok("POST", f"keys/{fingerprint(KEYS[0])}/reset")
    assert admin.ok("POST", f"keys/{fingerprint(KEYS[1])}/disable", {"note": "lent out"})["disabled"][
        "disabled_by_hand"] is True
    assert admin.ok("GET", "keys/meta")["keys"][fingerprint(KEYS[1])]["note"] == "lent out"
    admin.ok("DELETE", f"keys/{fingerprint(KEYS[2])}")
    assert a.kl.pool.get(fingerprint(KEYS[2])) is None


def test_a_wrong_secret_is_said_once_and_its_keys_are_not_loaded(pair, fake, caplog):
    fake.allow(*KEYS, NEW_KEY)
    a = pair(KEY_ENCRYPTION_SECRET=SECRET)
    AdminClient(a.url, ADMIN).ok("POST", "keys", {"keys": NEW_KEY})
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="keyloom.keys"):
        wrong = pair(KEY_ENCRYPTION_SECRET="not-the-secret-the-keys-were-stored-with")
        unset = pair()
    assert wrong.kl.pool.get(NEW_FP) is None and unset.kl.pool.get(NEW_FP) is None
    assert len(wrong.kl.pool.keys) == len(KEYS)  # the environment's keys are served
    lines = [r.getMessage() for r in caplog.records if r.name == "keyloom.keys"]
    assert len(lines) == 2, lines
    assert "KEY_ENCRYPTION_SECRET is not the secret" in lines[0]
    assert "KEY_ENCRYPTION_SECRET is not set" in lines[1]
    assert all(NEW_KEY not in line and SECRET not in line for line in lines)
    # adding on the replica with the wrong secret is refused (it would mix two secrets)
    r = AdminClient(wrong.url, ADMIN).call("POST", "keys", {"keys": make_key(43)})
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_encryption_secret_wrong"


def test_replicas_must_share_set_passwords():
    """With REDIS_URL a generated password would differ per replica: start-up refuses, naming what to set."""
    assert unshared_passwords("", "", "") == ""
    assert unshared_passwords("redis://r:6379/0", "p", "a") == ""
    refusal = unshared_passwords("redis://r:6379/0", "", "")
    assert "PASSWORD and ADMIN_PASSWORD must be set" in refusal
    assert "ADMIN_PASSWORD must be set" in unshared_passwords("redis://r:6379/0", "p", "")


def test_start_up_refuses_redis_mode_without_set_passwords(monkeypatch, capsys, tmp_path):
    from server.main import main
    for name in ("PASSWORD", "ADMIN_PASSWORD", "WEB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: the refusal comes first
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PASSWORD", "client-password-0123")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "ADMIN_PASSWORD must be set" in err and "client-password-0123" not in err
    assert not (tmp_path / "admin_password").exists()  # nothing generated
