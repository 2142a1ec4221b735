"""The admin API: sign-in, sessions, CSRF, throttling, and every action the dashboard offers."""
from __future__ import annotations

import re
import time

import openai
import pytest

from server.admin.sessions import COOKIE
from server.clock import ManualClock
from server.handlers.admin import admin_routes
from tests.conftest import KEYS, PASSWORD, make_key
from tests.fake_gemini import Reply, text_reply
from tests.support.admin import AdminClient

ADMIN = "admin-password-abcdefghij"
SAMPLE = {r"([0-9a-f]{12})": "0123456789ab", r"(enable|reset)": "enable", r"([A-Z0-9_]+)": "FAKE_STREAMING",
          r"([a-z0-9]+)": "t1", r"([A-Za-z0-9\-]{1,40})": "cfg-0123456789ab"}
PROTECTED = [p for p, h in admin_routes("") if "/api/" in p and not p.endswith("/login")]


def concrete(pattern: str) -> str:
    for group, sample in SAMPLE.items():
        pattern = pattern.replace(group, sample)
    return pattern


def full_keys_in(text: str, keys: list[str]) -> list[str]:
    return [k for k in keys if k in text]


@pytest.fixture
def running(start_keyloom):
    return start_keyloom(ADMIN_PASSWORD=ADMIN)


@pytest.fixture
def admin(running):
    a = AdminClient(running.url, ADMIN)
    yield a
    a.close()


def test_every_admin_route_answers_401_without_a_session(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, ADMIN_LOGIN_ATTEMPTS="1000")  # wrong guesses would be throttled
    assert len(PROTECTED) >= 14
    with running.http() as http:
        for pattern in PROTECTED:
            path = concrete(pattern)
            for method in ("GET", "POST", "PUT", "DELETE"):
                for headers in ({}, {"Authorization": f"Bearer {PASSWORD}"},  # the client password is not the admin's
                                {"Authorization": "Bearer wrong"}, {"Cookie": f"{COOKIE}=forged.abc"}):
                    r = http.request(method, path, headers={"Content-Type": "application/json", **headers},
                                     content=b"{}")
                    assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                    err = r.json()["error"]
                    assert err["code"] in ("unauthorized", "invalid_password")
                    # nothing about the pool leaks: no model names, no key masks, no counts
                    assert "gemini" not in r.text and "AIza" not in r.text


def test_page_without_a_session_is_only_the_login_form(running, admin):
    with running.http() as http:
        r = http.get("/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert 'id="login-form"' in r.text and "keys-body" not in r.text and "dashboard.js" not in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
    signed_in = admin.http.get("/")
    assert "keys-body" in signed_in.text and 'id="login-form"' not in signed_in.text
    for asset in ("app.css", "dashboard.js", "login.js", "i18n.js", "icon.svg"):
        assert admin.http.get(f"/assets/{asset}").status_code == 200
    assert admin.http.get("/assets/../app.py").status_code == 404
    assert admin.http.get("/assets/nope.js").status_code == 404


def test_session_cookie_is_signed_http_only_strict_and_expires(running, admin):
    cookie = admin.login_response.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie and "expires=" in cookie
    assert ADMIN not in cookie and "Secure" not in cookie  # plain http here; https behind a proxy sets Secure
    value = admin.http.cookies[COOKIE]
    token, sig = value.split(".")
    with running.http() as http:
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B") + "." + sig
        assert http.get("/api/status", headers={"Cookie": f"{COOKIE}={tampered}"}).status_code == 401
        assert http.get("/api/status", headers={"Cookie": f"{COOKIE}={value}"}).status_code == 200
        r = http.post("/api/login", json={"password": ADMIN}, headers={"X-Forwarded-Proto": "https"})
        assert "Secure" not in r.headers["set-cookie"]  # X-Forwarded-Proto is trusted only behind a proxy hop
    # sign-out ends the session on the server, not only in the browser
    assert admin.ok("POST", "logout")["signed_out"] is True
    with running.http() as http:
        assert http.get("/api/status", headers={"Cookie": f"{COOKIE}={value}"}).status_code == 401


def test_secure_cookie_behind_an_https_proxy(start_keyloom):
    running = start_keyloom(ADMIN_PASSWORD=ADMIN, TRUST_PROXY_HEADERS="1")
    with running.http() as http:
        r = http.post("/api/login", json={"password": ADMIN}, headers={"X-Forwarded-Proto": "https"})
        assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]


def test_sessions_expire(start_keyloom):
    clock = ManualClock(time.time())
    running = start_keyloom(clock=clock, ADMIN_PASSWORD=ADMIN, ADMIN_SESSION_HOURS="1")
    a = AdminClient(running.url, ADMIN)
    assert a.get("status").status_code == 200
    clock.advance(3599)
    assert a.get("status").status_code == 200
    clock.advance(2)
    assert a.get("status").status_code == 401
    a.close()


def test_csrf_is_enforced_on_every_change(running, admin):
    body = {"FAKE_STREAMING": False}
    r = admin.http.put("/api/settings", json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    wrong = admin.csrf[:-1] + ("x" if admin.csrf[-1] != "x" else "y")  # differs whatever the token ends with
    r = admin.http.put("/api/settings", json=body, headers={"X-CSRF-Token": wrong})
    assert r.status_code == 403
    # a cross-site form can only send form or text content types: refused before anything else
    r = admin.http.put("/api/settings", content=b'{"FAKE_STREAMING": false}',
                       headers={"X-CSRF-Token": admin.csrf, "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert running.kl.settings.FAKE_STREAMING is True
    for path in ("keys", "keys/test", "keys/export", f"keys/{running.kl.pool.keys[0].fp}/reset", "logout"):
        assert admin.http.post("/api/" + path, json={}).status_code == 403, path
    assert admin.http.delete(f"/api/keys/{running.kl.pool.keys[0].fp}").status_code == 403
    assert len(running.kl.pool.keys) == 3
    assert admin.call("PUT", "settings", body).status_code == 200
    assert running.kl.settings.FAKE_STREAMING is False
    # no cross-origin answers from the admin side
    r = admin.http.options("/api/settings", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "PUT"})
    assert r.status_code in (403, 405) and "access-control-allow-origin" not in r.headers


def test_bearer_admin_password_for_scripts_needs_no_csrf(running):
    with running.http(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        assert http.get("/api/status").status_code == 200
        r = http.put("/api/settings", json={"MAX_RETRY_NUM": 4})
        assert r.status_code == 200
    assert running.kl.settings.MAX_RETRY_NUM == 4


def test_failed_logins_are_throttled_per_ip(start_keyloom):
    clock = ManualClock(time.time())
    running = start_keyloom(clock=clock, ADMIN_PASSWORD=ADMIN, ADMIN_LOGIN_ATTEMPTS="3", TRUST_PROXY_HEADERS="1")
    ip_a, ip_b = {"X-Forwarded-For": "203.0.113.5"}, {"X-Forwarded-For": "203.0.113.6"}
    with running.http() as http:
        for _ in range(3):
            r = http.post("/api/login", json={"password": "guess"}, headers=ip_a)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_password"
        r = http.post("/api/login", json={"password": ADMIN}, headers=ip_a)  # even the right one waits
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 900
        assert r.json()["error"]["type"] == "rate_limit_error"
        # a script's Bearer guesses are throttled by the same count
        assert http.get("/api/status", headers={**ip_a, "Authorization": f"Bearer {ADMIN}"}).status_code == 429
        # another address is not affected
        assert http.post("/api/login", json={"password": ADMIN}, headers=ip_b).status_code == 200
        clock.advance(15 * 60 + 1)
        assert http.post("/api/login", json={"password": ADMIN}, headers=ip_a).status_code == 200
        # wrong Bearer passwords count too
        for _ in range(3):
            assert http.get("/api/status", headers={**ip_b, "Authorization": "Bearer nope"}).status_code == 401
        assert http.post("/api/login", json={"password": ADMIN}, headers=ip_b).status_code == 429
    rows = [a for a in AdminClient(running.url, ADMIN, headers=ip_a).ok("GET", "audit")["audit"]
            if a["action"] == "login_failed"]
    # refused sign-ins are aggregated (one row per flush), not one row per guess
    assert sum(int(r["detail"].split()[0]) for r in rows) == 3
    assert all("203.0.113.5" in r["detail"] for r in rows)


def test_admin_password_defaults_and_alias(start_keyloom, tmp_path):
    r1 = start_keyloom()  # no ADMIN_PASSWORD: a separate one, generated and kept in DATA_DIR, never PASSWORD
    with r1.http() as http:
        assert http.post("/api/login", json={"password": PASSWORD}).status_code == 401
        assert http.get("/api/status", headers=r1.auth()).status_code == 401
        assert http.post("/api/keys/export", json={"password": PASSWORD},
                         headers={"Authorization": f"Bearer {PASSWORD}"}).status_code == 401
    stored = tmp_path / "admin_password"
    assert stored.read_text().strip() == r1.kl.admin_password != PASSWORD
    assert stored.stat().st_mode & 0o777 == 0o600
    AdminClient(r1.url, r1.kl.admin_password).close()
    r2 = start_keyloom(WEB_PASSWORD="hajimi-web-pass")  # hajimi's name
    AdminClient(r2.url, "hajimi-web-pass").close()
    with r2.http() as http:
        assert http.post("/api/login", json={"password": PASSWORD}).status_code == 401
    r3 = start_keyloom(WEB_PASSWORD="hajimi-web-pass", ADMIN_PASSWORD=ADMIN)
    AdminClient(r3.url, ADMIN).close()


def test_dashboard_path_moves_page_and_api(start_keyloom):
    running = start_keyloom(DASHBOARD_PATH="/panel/", ADMIN_PASSWORD=ADMIN)
    with running.http() as http:
        assert http.get("/api/status").status_code == 404
        assert http.get("/panel/api/status").status_code == 401
        r = http.get("/panel")
        assert r.status_code == 302 and r.headers["location"] == "/panel/"
        assert 'id="login-form"' in http.get("/panel/").text
        assert "login-form" not in http.get("/").text  # the plain status page, no data
    a = AdminClient(running.url, ADMIN, base="/panel")
    assert "Path=/panel/" in a.login_response.headers["set-cookie"]
    assert a.ok("GET", "status")["service"]["keys"]["total"] == 3
    a.close()


def test_status_keys_requests_and_charts_after_traffic(running, admin, fake):
    client = running.client()
    for _ in range(3):
        client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    fake.keys[KEYS[0]] = "quota_day"
    fake.keys[KEYS[1]] = "invalid"
    client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    st = admin.ok("GET", "status")
    svc = st["service"]
    assert svc["requests_today"] == 5 and svc["outcomes_today"]["ok"] == 4 and svc["outcomes_today"]["client"] == 1
    assert svc["success_rate"] == 80.0 and svc["p50_ms"] is not None and svc["p95_ms"] >= svc["p50_ms"]
    assert svc["keys"] == {"total": 3, "active": 2, "disabled": 1}
    by_fp = {k["fp"]: k for k in st["keys"]}
    pool = running.kl.pool
    k0, k1 = by_fp[pool.keys[0].fp], by_fp[pool.keys[1].fp]
    assert k0["state"] == "exhausted" and k0["why"] == "gemini-2.5-flash"
    assert k1["state"] == "disabled" and "InvalidKey" in k1["why"]
    assert k1["last_error"] and k1["last_error_at"]
    flash = [m for k in st["keys"] for m in k["models"] if m["model"] == "gemini-2.5-flash"]
    assert sum(m["requests"] for m in flash) == 6  # 3 + the exhausted + the invalid + the winner
    assert all(k["masked"].startswith("AIza…") for k in st["keys"])
    charts = admin.ok("GET", "charts")
    assert sum(sum(v) for v in charts["minutes"]["series"].values()) == 5
    assert sum(charts["minutes"]["series"]["ok"]) == 4 and len(charts["minutes"]["series"]["ok"]) == 60
    assert charts["days"]["series"]["ok"][-1] == 4 and len(charts["days"]["days"]) == 30
    reqs = admin.ok("GET", "requests")["requests"]
    assert len(reqs) == 5 and reqs[0]["status"] == 404 and "no-such-model" in reqs[0]["error"]
    assert [r["status"] for r in admin.ok("GET", "requests?status=ok")["requests"]] == [200] * 4
    assert len(admin.ok("GET", "requests?status=404")["requests"]) == 1
    assert admin.get("requests?status=teapot").status_code == 400
    winner = reqs[1]
    assert winner["attempts"] == 3 and winner["key"].startswith("AIza…") and winner["prompt_tokens"] > 0


def test_add_keys_reports_duplicates_and_malformed(running, admin, fake):
    new1, new2 = make_key(11), make_key(12)
    text = f"{new1},{new2}\n{KEYS[0]} ; {new1} | not-a-key AIzaTooShort \"{make_key(13)}x\""
    r = admin.ok("POST", "keys", {"keys": text})
    assert [k["key"] for k in r["added"]] == [new1[:4] + "…" + new1[-4:], new2[:4] + "…" + new2[-4:]]
    assert len(r["duplicates"]) == 2 and len(r["malformed"]) == 3 and r["stored_in_database"]
    assert not full_keys_in(str(r), [new1, new2, KEYS[0]])
    pool = running.kl.pool
    assert len(pool.keys) == 5 and {k.source for k in pool.keys[3:]} == {"dashboard"}
    rows = running.loop.run(running.kl.db.fetchall("SELECT secret FROM stored_key ORDER BY secret"))
    assert sorted(s for s, in rows) == sorted([new1, new2])
    assert admin.call("POST", "keys", {"keys": "  "}).status_code == 400
    assert admin.call("POST", "keys", {"keys": 42}).status_code == 400
    # the new keys serve requests
    fake.allow(new1, new2)
    for k in KEYS:
        fake.keys[k] = "invalid"
    out = running.client().chat.completions.create(model="gemini-2.5-flash",
                                                   messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content


def test_test_keys_job_reports_progress_and_disables_bad_keys(running, admin, fake):
    fake.keys[KEYS[2]] = "suspended"
    job = admin.ok("POST", "keys/test", {})
    assert job["total"] == 3 and "id" in job
    for _ in range(200):
        job = admin.ok("GET", f"jobs/{job['id']}")
        if job["finished"]:
            break
        time.sleep(0.02)
    assert job["finished"] and job["done"] == 3 and job["ok"] == 2 and job["failed"] == 1
    bad = next(r for r in job["results"] if not r["ok"])
    assert bad["kind"] == "KeySuspended" and bad["disabled"] is True and bad["key"].startswith("AIza…")
    assert not full_keys_in(str(job), KEYS)
    assert running.kl.pool.get(bad["fp"]).disabled_reason
    # a test of a key costs no generation quota: only model-list calls went out
    assert {r.action for r in fake.requests} == {"listModels"}
    one = admin.ok("POST", "keys/test", {"keys": [running.kl.pool.keys[0].fp]})
    assert one["total"] == 1
    assert admin.call("POST", "keys/test", {"keys": ["ffffffffffff"]}).status_code == 404
    assert admin.call("POST", "keys/test", {"keys": "all"}).status_code == 400
    assert admin.get("jobs/zzz").status_code == 404


def test_enable_reset_remove(running, admin, fake):
    pool = running.kl.pool
    k0 = pool.keys[0]
    fake.keys[KEYS[0]] = "invalid"
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}])
    assert k0.disabled_reason
    fake.keys[KEYS[0]] = "ok"
    admin.ok("POST", f"keys/{k0.fp}/enable")
    assert k0.disabled_reason is None
    assert pool.usage.requests(k0.fp, "gemini-2.5-flash") == 1
    admin.ok("POST", f"keys/{k0.fp}/reset")
    assert pool.usage.requests(k0.fp, "gemini-2.5-flash") == 0
    failures = running.loop.run(running.kl.db.fetchall("SELECT * FROM key_failures WHERE key_fp = ?", (k0.fp,)))
    assert failures == []
    r = admin.ok("DELETE", f"keys/{k0.fp}")
    assert r["removed"]["source"] == "environment" and pool.get(k0.fp) is None and len(pool.keys) == 2
    assert admin.call("DELETE", f"keys/{k0.fp}").status_code == 404
    removed = running.loop.run(running.kl.db.fetchall("SELECT key_fp FROM removed_key"))
    assert removed == [(k0.fp,)]
    actions = [a["action"] for a in admin.ok("GET", "audit")["audit"]]
    assert actions[:3] == ["key_removed", "key_reset", "key_enabled"]


def test_export_asks_for_the_password_again(running, admin, fake):
    fake.keys[KEYS[1]] = "invalid"
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}])
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}])
    r = admin.call("POST", "keys/export", {})
    assert r.status_code == 401
    r = admin.call("POST", "keys/export", {"password": "wrong"})
    assert r.status_code == 401
    out = admin.ok("POST", "keys/export", {"password": ADMIN})
    assert sorted(out["keys"]) == sorted([KEYS[0], KEYS[2]])  # the working ones
    audit = admin.ok("GET", "audit")["audit"]
    assert audit[0]["action"] == "keys_exported" and not full_keys_in(str(audit), KEYS)
    # the two refusals are summed up (a stranger's guesses must not each write a row; a flush tick between them
    # may make it two rows of one), and written before the export
    refused = [a for a in audit[1:] if a["action"] == "export_refused"]
    assert sum(int(a["detail"].split()[0]) for a in refused) == 2 and audit[1]["action"] == "export_refused"


def test_live_settings_take_effect_and_reset_to_environment(running, admin):
    client = running.client()
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    client.chat.completions.create(model="gemini-2.5-flash", messages=msgs)
    r = admin.ok("PUT", "settings", {"MAX_MESSAGES": 2, "BLOCKED_MODELS": "gemini-2.5-pro"})
    by_name = {s["name"]: s for s in r["settings"]}
    assert by_name["MAX_MESSAGES"]["value"] == "2" and by_name["MAX_MESSAGES"]["source"] == "dashboard"
    assert by_name["MAX_MESSAGES"]["environment"] == "5000" and by_name["MAX_MESSAGES"]["changed_at"]
    assert by_name["MAX_MESSAGES"]["environment_changed_since"] is False
    with pytest.raises(Exception) as e:
        client.chat.completions.create(model="gemini-2.5-flash", messages=msgs)
    assert e.value.status_code == 400
    with pytest.raises(Exception) as e:
        client.chat.completions.create(model="gemini-2.5-pro", messages=msgs[:1])
    assert e.value.status_code == 404
    r = admin.ok("DELETE", "settings/MAX_MESSAGES")
    assert {s["name"]: s for s in r["settings"]}["MAX_MESSAGES"]["source"] == "default"
    client.chat.completions.create(model="gemini-2.5-flash", messages=msgs)
    assert admin.call("DELETE", "settings/MAX_MESSAGES").status_code == 404
    # non-live, unknown and invalid values: one 400 naming each problem, nothing changed
    r = admin.call("PUT", "settings", {"PORT": 1, "NOPE": 1, "MAX_RETRY_NUM": "many", "MAX_MESSAGES": 3})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "PORT" in msg and "NOPE" in msg and "MAX_RETRY_NUM" in msg and "MAX_MESSAGES" not in msg
    assert running.kl.settings.MAX_MESSAGES == 5000
    # secrets never come back, not even masked differently per value
    shown = {s["name"]: s for s in admin.ok("GET", "settings")["settings"]}
    assert shown["PASSWORD"]["value"] == "(set)" and shown["GEMINI_API_KEYS"]["value"] == "(set)"
    assert shown["ADMIN_PASSWORD"]["value"] == "(set)"
    assert PASSWORD not in str(shown) and ADMIN not in str(shown) and not full_keys_in(str(shown), KEYS)
    # a changed upstream timeout reaches the client that copied it at start
    admin.ok("PUT", "settings", {"UPSTREAM_TIMEOUT": 42})
    assert running.kl.gemini.timeout == 42.0


def test_fake_streaming_switch_applies_to_the_next_request(running, admin, fake):
    fake.script.append(Reply(body=text_reply("one"), delay=0.0))
    with running.http() as http:
        body = {"model": "gemini-2.5-flash", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        before = http.post("/v1/chat/completions", json=body, headers=running.auth())
        admin.ok("PUT", "settings", {"FAKE_STREAMING": False})
        after = http.post("/v1/chat/completions", json=body, headers=running.auth())
    assert before.status_code == after.status_code == 200
    fake_calls = [r.action for r in fake.requests if r.action in ("generateContent", "streamGenerateContent")]
    assert fake_calls == ["generateContent", "streamGenerateContent"]


def test_no_response_carries_a_full_key_except_the_export(running, admin, fake):
    fake.keys[KEYS[1]] = "suspended"  # Google's message quotes the key
    client = running.client()
    client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}])
    bodies = []
    for path in ["session", "status", "charts", "requests", "requests?status=error", "audit", "settings"]:
        r = admin.get(path)
        bodies.append(r.text + str(r.headers))
    bodies.append(admin.http.get("/").text)
    job = admin.test_keys()
    bodies.append(str(job))
    bodies.append(str(admin.ok("POST", "keys", {"keys": KEYS[0] + " " + make_key(20)})))
    for text in bodies:
        assert not full_keys_in(text, [*KEYS, make_key(20)]), text[:300]
    assert re.search(r"AIza…", "".join(bodies))


def test_signed_in_every_route_and_method_answers_without_a_server_error(running, admin):
    """Wrong methods, odd bodies and unknown ids get 4xx in the OpenAI error shape, never a 500."""
    bodies = [None, b"", b"[]", b"{not json", b'{"keys": null, "password": 1, "FAKE_STREAMING": []}']
    for pattern in PROTECTED:
        path = concrete(pattern)
        if path.endswith("/logout"):
            continue  # would end the session
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            for body in bodies:
                r = admin.http.request(method, path, content=body,
                                       headers={"X-CSRF-Token": admin.csrf, "Content-Type": "application/json"})
                assert r.status_code < 500, (method, path, body, r.status_code, r.text)
                if r.status_code >= 400:
                    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert admin.get("status").status_code == 200


def test_a_new_admin_password_ends_every_session(running, admin):
    assert admin.get("status").status_code == 200
    running.kl.admin_password = "a-new-password-after-redeploy"  # what a restart with a new secret does
    assert admin.get("status").status_code == 401
    AdminClient(running.url, "a-new-password-after-redeploy").close()
