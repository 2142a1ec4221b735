"""After a restart the dashboard shows what it showed before, and a key never leaks anywhere:
real subprocesses, the real SQLite file, the real log output."""
from __future__ import annotations

import os
import signal
import stat

import httpx
import openai
import pytest

from server.store.db import DB_FILE
from tests.conftest import KEYS, PASSWORD, make_key
from tests.fake_gemini import Reply, text_reply
from tests.support.admin import AdminClient
from tests.support.closing import track
from tests.support.proc import KeyloomProcess

ADMIN = "admin-password-abcdefghij"
HELLO = [{"role": "user", "content": "hello"}]


def proc_env(fake, keys=KEYS, **extra):
    env = {"GEMINI_API_KEYS": ",".join(keys), "GEMINI_BASE_URL": fake.base_url, "PASSWORD": PASSWORD,
           "ADMIN_PASSWORD": ADMIN, "MAX_REQUESTS_PER_MINUTE": "0", "MAX_REQUESTS_PER_DAY_PER_IP": "0",
           "FLUSH_INTERVAL": "0.2", "LOG_LEVEL": "DEBUG"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def client(p):
    return track(openai.OpenAI(base_url=p.url + "/v1", api_key=PASSWORD, max_retries=0, timeout=20))


def snapshot(a: AdminClient) -> dict:
    status = a.ok("GET", "status")
    svc = status["service"]
    keys = {k["fp"]: (k["state"], k["why"], k["requests"], k["successes"], k["failures"], k["tokens"],
                      k["last_error"], [(m["model"], m["requests"], m["state"]) for m in k["models"]])
            for k in status["keys"]}
    settings = {s["name"]: (s["value"], s["source"]) for s in a.ok("GET", "settings")["settings"]
                if s["name"] != "PORT"}  # each process here gets a free port
    return {"service": (svc["requests_today"], svc["outcomes_today"], svc["success_rate"], svc["p50_ms"],
                        svc["p95_ms"], svc["keys"], svc["stored_keys"]),
            "keys": keys, "charts": a.ok("GET", "charts"), "requests": a.ok("GET", "requests")["requests"],
            "audit": a.ok("GET", "audit")["audit"], "settings": settings}


def test_dashboard_shows_the_same_after_a_restart(fake, tmp_path):
    added = make_key(31)
    fake.allow(added)
    env = proc_env(fake)
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        c = client(p)
        for _ in range(3):
            c.chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
        fake.keys[KEYS[0]] = "quota_day"
        fake.keys[KEYS[1]] = "invalid"
        c.chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
        fake.keys[KEYS[2]] = "quota_minute"
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="gemini-2.0-flash", messages=HELLO)
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="no-such-model", messages=HELLO)
        a = AdminClient(p.url, ADMIN)
        a.ok("POST", "keys", {"keys": added})
        a.ok("PUT", "settings", {"MAX_RETRY_NUM": 7, "FAKE_STREAMING": False})
        before = snapshot(a)
        cookie = dict(a.http.cookies)
    finally:
        assert p.stop(signal.SIGTERM) == 0
    assert before["service"][0] == 6
    states = sorted(v[0] for v in before["keys"].values())
    assert states == ["active", "cooling", "disabled", "exhausted"]

    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        a2 = AdminClient(p.url, ADMIN)
        after = snapshot(a2)
        # the previous browser session is still signed in
        with httpx.Client(base_url=p.url, cookies=cookie) as http:
            assert http.get("/api/status").status_code == 200
    finally:
        assert p.stop(signal.SIGTERM) == 0
    for part in ("service", "keys", "requests", "settings"):
        assert after[part] == before[part], part
    assert after["charts"]["days"] == before["charts"]["days"]
    assert sum(map(sum, after["charts"]["minutes"]["series"].values())) == 6
    assert after["audit"][1:] == before["audit"]  # plus the new sign-in
    assert after["settings"]["MAX_RETRY_NUM"] == ("7", "dashboard")

    # file modes: the database holds dashboard keys
    for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_a_changed_environment_is_never_masked_silently(fake, tmp_path):
    env = proc_env(fake, MAX_RETRY_NUM=9)
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        AdminClient(p.url, ADMIN).ok("PUT", "settings", {"MAX_RETRY_NUM": 3})
    finally:
        p.stop()
    env["MAX_RETRY_NUM"] = "12"  # the owner redeploys with a new value
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        s = {x["name"]: x for x in AdminClient(p.url, ADMIN).ok("GET", "settings")["settings"]}["MAX_RETRY_NUM"]
        assert s["value"] == "3" and s["source"] == "dashboard"
        assert s["environment"] == "12" and s["environment_when_changed"] == "9"
        assert s["environment_changed_since"] is True
        a = AdminClient(p.url, ADMIN)
        s = {x["name"]: x for x in a.ok("DELETE", "settings/MAX_RETRY_NUM")["settings"]}["MAX_RETRY_NUM"]
        assert s["value"] == "12" and s["source"] == "environment"
    finally:
        p.stop()
    out = p.output()
    assert "MAX_RETRY_NUM: the value saved on the dashboard ('3') is in force; the environment now says '12'" in out


def test_removed_environment_key_stays_out_until_added_again(fake, tmp_path):
    env = proc_env(fake)
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        a = AdminClient(p.url, ADMIN)
        fp = a.ok("GET", "status")["keys"][0]["fp"]
        a.ok("DELETE", f"keys/{fp}")
    finally:
        p.stop()
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        a = AdminClient(p.url, ADMIN)
        assert fp not in [k["fp"] for k in a.ok("GET", "status")["keys"]]
        assert len(a.ok("POST", "keys", {"keys": KEYS[0]})["added"]) == 1
    finally:
        p.stop()
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        assert fp in [k["fp"] for k in AdminClient(p.url, ADMIN).ok("GET", "status")["keys"]]
    finally:
        p.stop()


KINDS = ["invalid", "suspended", "leaked", "quota_minute", "quota_day", "overloaded", "internal"]


def test_no_full_key_in_responses_pages_logs_or_the_database(fake, tmp_path):
    """Every upstream error kind, on keys of their own; then search everything for every full key."""
    env_keys = [make_key(40 + i) for i in range(len(KINDS))] + [make_key(60)]
    added = make_key(61)
    for k, kind in zip(env_keys, KINDS, strict=False):
        fake.keys[k] = kind
    fake.allow(env_keys[-1], added)
    env = proc_env(fake, keys=env_keys, CONCURRENT_REQUESTS=1, MAX_RETRY_NUM=20)
    bodies: list[str] = []
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        with httpx.Client(base_url=p.url, timeout=30, headers={"Authorization": f"Bearer {PASSWORD}"}) as http:
            for model in ("gemini-2.5-flash", "gemini-2.0-flash"):
                for stream in (False, True):
                    r = http.post("/v1/chat/completions", json={"model": model, "stream": stream, "messages": HELLO})
                    bodies.append(r.text + str(r.headers))
            # transport failures and bad replies on the last key
            fake.script.extend([Reply(status=500, body=b"AIza leaked? " + env_keys[0].encode()),
                                Reply(body=b"{not json"), Reply(body=text_reply("fine"))])
            r = http.post("/v1/chat/completions", json={"model": "gemini-2.5-flash", "messages": HELLO})
            bodies.append(r.text)
            for path, body in (("/v1/embeddings", {"model": "gemini-embedding-001", "input": ["a", "b"]}),
                               ("/v1beta/models/gemini-2.5-flash:generateContent",
                                {"contents": [{"role": "user", "parts": [{"text": "native"}]}]}),
                               ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                                {"contents": [{"role": "user", "parts": [{"text": "native"}]}]}),
                               ("/v1beta/models/gemini-2.5-flash:countTokens",
                                {"contents": [{"role": "user", "parts": [{"text": "native"}]}]})):
                r = http.post(path, json=body)
                bodies.append(r.text + str(r.headers))
            for path in ("/v1/models", "/health", "/openapi.json", "/", "/v1/models/gemini-2.5-flash", "/nope",
                         "/v1beta/models", "/v1/models?type=all"):
                r = http.get(path)
                bodies.append(r.text + str(r.headers))
        a = AdminClient(p.url, ADMIN)
        bodies.append(a.http.get("/").text)
        for asset in ("dashboard.js", "i18n.js", "login.js", "app.css"):
            bodies.append(a.http.get("/assets/" + asset).text)
        a.ok("POST", "keys", {"keys": added})
        job = a.test_keys()
        bodies.append(str(job))
        for path in ("session", "status", "charts", "requests", "requests?status=error", "audit", "settings"):
            r = a.get(path)
            bodies.append(r.text + str(r.headers))
        exported = a.ok("POST", "keys/export", {"password": ADMIN})["keys"]
        assert added in exported  # the one place a full key may appear
    finally:
        p.stop()
    everything = env_keys + [added]
    for text in bodies:
        assert not [k for k in everything if k in text], text[:400]
    log = p.output()
    assert "InvalidKey" in log and "KeySuspended" in log  # the log did record the failures
    assert not [k for k in everything if k in log]
    raw = b"".join((tmp_path / n).read_bytes() for n in os.listdir(tmp_path) if n.startswith(DB_FILE))
    assert not [k for k in env_keys if k.encode() in raw]  # environment keys are never written
    assert added.encode() in raw  # a key added on the dashboard is (it must survive restarts)
