"""The chat playground's API: sign-in with PASSWORD, every conversation route (401 without credentials,
CSRF with a cookie, clear 4xx for bad input), export/import, search, and Markdown rendered inert."""
from __future__ import annotations

import json

import httpx
import pytest

from server.render import render
from tests.conftest import PASSWORD

ROUTES = [("GET", "/api/conversations"), ("POST", "/api/conversations"), ("POST", "/api/conversations/import"),
          ("GET", "/api/conversations/0123456789abcdef"), ("PUT", "/api/conversations/0123456789abcdef"),
          ("DELETE", "/api/conversations/0123456789abcdef"),
          ("GET", "/api/conversations/0123456789abcdef/export"), ("POST", "/api/render")]
CONV = {"model": "gemini-2.5-flash", "params": {"temperature": 0.4, "top_p": 0.9, "max_tokens": 300,
                                                "reasoning_effort": "low", "stream": True, "system": "Be brief."},
        "messages": [{"role": "user", "content": "What is a llama?"},
                     {"role": "assistant", "content": "A **camelid**.", "reasoning": "easy",
                      "usage": {"prompt_tokens": 5, "completion_tokens": 3}}]}


@pytest.fixture
def api(keyloom):
    with keyloom.http(headers=keyloom.auth()) as http:
        yield http


def test_every_route_needs_credentials(start_keyloom):
    keyloom = start_keyloom(ADMIN_LOGIN_ATTEMPTS="1000")  # wrong guesses are throttled; tested in test_hardening
    with keyloom.http() as http:
        for method, path in ROUTES:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                r = http.request(method, path, headers={"Content-Type": "application/json", **headers}, content=b"{}")
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.json()["error"]["code"] == "invalid_api_key"
        page = http.get("/chat")
        assert 'id="login-form"' in page.text and "chat.js" not in page.text


def test_cookie_sign_in_needs_csrf_for_changes(keyloom):
    with keyloom.http() as http:
        assert http.post("/chat/login", json={"password": "nope"}).status_code == 401
        r = http.post("/chat/login", json={"password": PASSWORD})
        cookie = r.headers["set-cookie"]
        assert r.status_code == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        csrf = r.json()["csrf"]
        assert http.get("/api/conversations").status_code == 200  # reads need only the cookie
        assert http.post("/api/conversations", json=CONV).status_code == 401  # changes need the token too
        assert http.post("/api/conversations", json=CONV, headers={"X-CSRF-Token": csrf}).status_code == 201
        assert http.post("/v1/chat/completions", json={"model": "gemini-2.5-flash", "messages": CONV["messages"][:1]},
                         headers={"X-CSRF-Token": csrf}).status_code == 200
        assert http.get("/chat/session").json()["csrf"] == csrf
        assert "chat.js" in http.get("/chat").text
        http.post("/chat/session", json={})  # sign out
        assert http.get("/api/conversations").status_code == 401


def test_create_read_update_search_delete(api):
    c = api.post("/api/conversations", json=CONV).json()
    assert c["title"] == "What is a llama?" and c["params"]["temperature"] == 0.4
    assert c["messages"][1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3}
    other = api.post("/api/conversations",
                     json={"messages": [{"role": "user", "content": "Tell me about otters"}]}).json()
    r = api.put(f"/api/conversations/{c['id']}", json={"title": "Llamas", "params": {"temperature": 1.2}})
    assert r.json()["title"] == "Llamas" and r.json()["params"] == {"temperature": 1.2}
    assert r.json()["messages"] == api.get(f"/api/conversations/{c['id']}").json()["messages"]
    ids = [x["id"] for x in api.get("/api/conversations").json()["conversations"]]
    assert ids == [c["id"], other["id"]]  # most recently changed first
    found = api.get("/api/conversations", params={"q": "CAMELID"}).json()["conversations"]
    assert [x["id"] for x in found] == [c["id"]] and found[0]["message_count"] == 2
    assert api.get("/api/conversations", params={"q": "otters"}).json()["conversations"][0]["id"] == other["id"]
    assert api.delete(f"/api/conversations/{other['id']}").json() == {"deleted": other["id"]}
    assert api.get(f"/api/conversations/{other['id']}").status_code == 404


def test_export_and_import(api):
    c = api.post("/api/conversations", json=CONV).json()
    md = api.get(f"/api/conversations/{c['id']}/export", params={"format": "md"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert "# What is a llama?" in md.text and "## System\n\nBe brief." in md.text and "A **camelid**." in md.text
    exported = api.get(f"/api/conversations/{c['id']}/export").json()
    assert exported["format"] == "keyloom-conversation/1"
    copy = api.post("/api/conversations/import", json=exported)
    assert copy.status_code == 201
    assert {k: copy.json()[k] for k in ("title", "model", "params", "messages")} == \
        {k: c[k] for k in ("title", "model", "params", "messages")}
    assert copy.json()["id"] != c["id"]
    assert api.get(f"/api/conversations/{c['id']}/export", params={"format": "pdf"}).status_code == 400


@pytest.mark.parametrize("method,path,body,status", [
    ("GET", "/api/conversations/ffffffffffffffff", None, 404),
    ("PUT", "/api/conversations/ffffffffffffffff", {"title": "x"}, 404),
    ("DELETE", "/api/conversations/ffffffffffffffff", None, 404),
    ("GET", "/api/conversations/ffffffffffffffff/export", None, 404),
    ("GET", "/api/conversations/not-an-id", None, 404),
    ("POST", "/api/conversations/import", {"messages": []}, 400),
    ("POST", "/api/conversations/import", {"format": "keyloom-conversation/1", "messages": "nope"}, 400),
    ("POST", "/api/conversations/import", [1, 2], 400),
    ("POST", "/api/conversations", {"messages": [{"role": "robot", "content": "x"}]}, 400),
    ("POST", "/api/conversations", {"params": {"temperature": 9}}, 400),
    ("POST", "/api/conversations", {"params": {"seed": 1}}, 400),
    ("POST", "/api/conversations", {"messages": [{"role": "user", "content": "x", "images": ["http://x/y.png"]}]}, 400),
    ("POST", "/api/conversations", {"title": "  "}, 400),
    ("POST", "/api/render", {"markdown": 5}, 400),
])
def test_bad_input_gets_a_clear_4xx(api, method, path, body, status):
    r = api.request(method, path, json=body) if body is not None else api.request(method, path)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and set(err) == {"message", "type", "param", "code"}


def test_malformed_json_body(api):
    r = api.post("/api/conversations/import", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_markdown_renders_inert():
    html = render("<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[click](javascript:alert(1))\n\n"
                  "<b onclick='x()'>raw</b>\n\n```js\nalert(1)\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                  "[ok](https://example.org)")
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="javascript' not in html and "<b" not in html
    assert '<pre><code class="language-js">alert(1)' in html and "<table>" in html
    assert '<a href="https://example.org" target="_blank" rel="noopener noreferrer nofollow">ok</a>' in html


def test_render_api(api):
    one = api.post("/api/render", json={"markdown": "**x**"}).json()
    assert one == {"html": "<p><strong>x</strong></p>\n"}
    many = api.post("/api/render", json={"markdown": ["a", "<i>b</i>"]}).json()["html"]
    assert many == ["<p>a</p>\n", "<p>&lt;i&gt;b&lt;/i&gt;</p>\n"]


def test_conversations_survive_a_restart(fake, tmp_path):
    from tests.support.proc import KeyloomProcess
    env = {"GEMINI_API_KEYS": "", "PASSWORD": PASSWORD, "GEMINI_BASE_URL": fake.base_url}
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        c = httpx.post(p.url + "/api/conversations", json=CONV, headers={"Authorization": f"Bearer {PASSWORD}"}).json()
    finally:
        p.stop()
    p = KeyloomProcess(env=env, data_dir=tmp_path).wait_ready()
    try:
        again = httpx.get(f"{p.url}/api/conversations/{c['id']}",
                          headers={"Authorization": f"Bearer {PASSWORD}"}).json()
    finally:
        p.stop()
    assert again == c
    assert json.dumps(again["params"], sort_keys=True) == json.dumps(CONV["params"], sort_keys=True)
