"""Client keys (server/client_keys.py): the owner shares the pool under keys of their own, each with limits, a
model list and an expiry; from CLIENT_KEYS and from the admin API; every API door checks them the same way and
answers in its own shape; none opens the dashboard, the admin API or the playground; usage is counted per key."""
from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from server.client_keys import parse_config
from server.clock import ManualClock
from server.settings import SettingsError
from tests.conftest import PASSWORD
from tests.support.closing import track

ADMIN = "admin-password-for-client-key-tests-01"
FRIEND = "kl-friend-key-from-config-0123456789abcdef"
HELLO = [{"role": "user", "content": "hello"}]


def config(**fields) -> str:
    return json.dumps([{"name": "friend", "key": FRIEND, **fields}])


def chat(kl, key: str, model: str = "gemini-2.5-flash") -> httpx.Response:
    with kl.http() as h:
        return h.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": HELLO})


def admin(kl) -> httpx.Client:
    return kl.http(headers={"Authorization": f"Bearer {ADMIN}"})


# -- configuration ------------------------------------------------------------------------------------------

def test_client_keys_are_read_from_json_or_toml_and_every_problem_is_named():
    assert parse_config(config(rpm=5, models=["gemini-2.5-*"], expires="2027-01-31")) == [
        (FRIEND, {"name": "friend", "rpm": 5, "models": ["gemini-2.5-*"], "expires": "2027-01-31"})]
    toml = f'[[client_keys]]\nname = "app"\nkey = "{FRIEND}"\ndaily_requests = 100\nexpires = 2027-02-01\n'
    assert parse_config(toml) == [(FRIEND, {"name": "app", "daily_requests": 100, "expires": "2027-02-01"})]
    with pytest.raises(SettingsError) as e:
        parse_config(json.dumps([{"name": "a", "key": "short"}, {"key": FRIEND, "rpm": 0},
                                 {"name": "b", "key": FRIEND + "x", "colour": "red"}]))
    assert len(e.value.problems) == 3 and all(p.startswith("CLIENT_KEYS[") for p in e.value.problems)
    assert FRIEND not in " ".join(e.value.problems)


def test_a_configured_key_opens_every_api_door(start_keyloom, fake):
    kl = start_keyloom(CLIENT_KEYS=config())
    assert chat(kl, FRIEND).status_code == 200
    assert track(openai.OpenAI(base_url=kl.base_url, api_key=FRIEND, max_retries=0)).responses.create(
        model="gemini-2.5-flash", input="hi", store=False).output_text == "Echo: hi"
    m = track(anthropic.Anthropic(base_url=kl.url, api_key=FRIEND, max_retries=0)).messages.create(
        model="gemini-2.5-flash", max_tokens=50, messages=HELLO)
    assert m.content[0].text == "Echo: hello"
    with kl.http() as h:
        r = h.post("/v1beta/models/gemini-2.5-flash:generateContent", headers={"x-goog-api-key": FRIEND},
                   json={"contents": [{"parts": [{"text": "hi"}]}]})
        assert r.status_code == 200
        r = h.post("/v1/embeddings", headers={"Authorization": f"Bearer {FRIEND}"},
                   json={"model": "gemini-embedding-001", "input": "hi"})
        assert r.status_code == 200


def test_a_client_key_never_opens_the_dashboard_the_admin_api_or_the_playground(start_keyloom, fake):
    kl = start_keyloom(CLIENT_KEYS=config(), ADMIN_PASSWORD=ADMIN, ADMIN_LOGIN_ATTEMPTS="100")
    bearer = {"Authorization": f"Bearer {FRIEND}"}
    with kl.http() as h:
        for path in ("/api/status", "/api/client-keys", "/api/settings"):
            assert h.get(path, headers=bearer).status_code == 401, path
        assert h.get("/api/conversations", headers=bearer).status_code == 401
        assert h.post("/api/keys/export", headers={**bearer, "Content-Type": "application/json"},
                      content=json.dumps({"password": FRIEND})).status_code in (401, 403)
        assert h.get("/api/conversations", headers={"Authorization": f"Bearer {PASSWORD}"}).status_code == 200


# -- the owner's admin API ----------------------------------------------------------------------------

def test_a_key_made_on_the_admin_api_is_shown_once_and_stored_as_a_hash(start_keyloom, fake, loop_thread):
    kl = start_keyloom(ADMIN_PASSWORD=ADMIN)
    with admin(kl) as h:
        r = h.post("/api/client-keys", json={"name": "sillytavern", "daily_requests": 50, "models": ["gemini-*"]})
        assert r.status_code == 201
        made = r.json()
        key = made["key"]
        assert key.startswith("kl-") and made["prefix"] == key[:8] and made["source"] == "dashboard"
        listing = h.get("/api/client-keys").json()["client_keys"]
        assert [e["name"] for e in listing] == ["sillytavern"] and "key" not in listing[0]
        assert key not in h.get("/api/client-keys").text and key not in h.get("/api/audit").text
    assert chat(kl, key).status_code == 200
    loop_thread.run(kl.kl.flusher.flush())
    raw = b"".join(p.read_bytes() for p in kl.kl.data_dir.glob("keyloom.db*"))
    assert key.encode() not in raw and key[8:].encode() not in raw


def test_the_owner_changes_disables_and_removes_a_key(start_keyloom, fake):
    kl = start_keyloom(ADMIN_PASSWORD=ADMIN, CLIENT_KEYS=config())
    with admin(kl) as h:
        made = h.post("/api/client-keys", json={"name": "script"}).json()
        assert h.put(f"/api/client-keys/{made['id']}", json={"enabled": False}).json()["enabled"] is False
        r = chat(kl, made["key"])
        assert r.status_code == 401 and r.json()["error"]["code"] == "client_key_disabled"
        h.put(f"/api/client-keys/{made['id']}", json={"enabled": True, "models": ["gemini-2.0-*"]})
        assert chat(kl, made["key"], "gemini-2.0-flash").status_code == 200
        assert h.delete(f"/api/client-keys/{made['id']}").json() == {"deleted": True}
        assert chat(kl, made["key"]).status_code == 401
        configured = next(e for e in h.get("/api/client-keys").json()["client_keys"] if e["source"] == "config")
        assert h.put(f"/api/client-keys/{configured['id']}", json={"rpm": 1}).status_code == 409
        assert h.delete(f"/api/client-keys/{configured['id']}").status_code == 409
        assert h.post("/api/client-keys", json={"name": "x", "rpm": -1}).status_code == 400
        assert h.post("/api/client-keys", json={"name": "x", "key": "kl-chosen"}).status_code == 400
        actions = [row["action"] for row in h.get("/api/audit").json()["audit"]]
    assert {"client_key_created", "client_key_changed", "client_key_removed"} <= set(actions)


# -- limits, in each door's shape ------------------------------------------------------------------------

def test_a_daily_request_limit_is_a_429_with_retry_after(start_keyloom, fake):
    kl = start_keyloom(CLIENT_KEYS=config(daily_requests=2))
    assert [chat(kl, FRIEND).status_code for _ in range(2)] == [200, 200]
    r = chat(kl, FRIEND)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and r.headers["x-should-retry"] == "false"
    assert len(fake.generate_calls()) == 2
    assert chat(kl, PASSWORD).status_code == 200  # the owner's key is not the friend's limit


def test_a_daily_token_limit_counts_what_answers_spent(start_keyloom, fake):
    kl = start_keyloom(CLIENT_KEYS=config(daily_tokens=5))
    assert chat(kl, FRIEND).status_code == 200  # 10 prompt tokens and more: over the limit after it
    assert chat(kl, FRIEND).status_code == 429


def test_requests_per_minute_on_an_injected_clock(start_keyloom, fake):
    clock = ManualClock()
    kl = start_keyloom(clock=clock, CLIENT_KEYS=config(rpm=1))
    assert chat(kl, FRIEND).status_code == 200
    r = chat(kl, FRIEND)
    assert r.status_code == 429 and "1 requests per minute" in r.json()["error"]["message"]
    clock.advance(61)
    assert chat(kl, FRIEND).status_code == 200


def test_models_outside_the_list_are_a_403_after_aliases(start_keyloom, fake):
    kl = start_keyloom(CLIENT_KEYS=config(models=["gemini-2.0-*"]), MODEL_ALIASES="cheap=gemini-2.0-flash")
    r = chat(kl, FRIEND, "gemini-2.5-pro")
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert chat(kl, FRIEND, "cheap").status_code == 200  # the alias serves an allowed model
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        track(anthropic.Anthropic(base_url=kl.url, api_key=FRIEND, max_retries=0)).messages.create(
            model="gemini-2.5-pro", max_tokens=50, messages=HELLO)
    assert e.value.body["error"]["type"] == "permission_error"
    with kl.http() as h:
        r = h.post("/v1beta/models/gemini-2.5-pro:generateContent", headers={"x-goog-api-key": FRIEND},
                   json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    assert [c.model for c in fake.generate_calls()] == ["gemini-2.0-flash"]


def test_a_client_key_with_a_model_list_sees_only_those_models(start_keyloom, fake):
    kl = start_keyloom(CLIENT_KEYS=config(models=["gemini-2.5-*"]),
                       MODEL_ALIASES="fast=gemini-2.5-flash,old=gemini-2.0-flash")
    ids = [m.id for m in kl.client(api_key=FRIEND).models.list().data]
    assert ids == ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "fast"]
    assert "old" in [m.id for m in kl.client().models.list().data]  # the owner sees everything


def test_an_expired_key_is_a_401_from_the_day_after(start_keyloom, fake):
    clock = ManualClock(1_800_000_000.0)  # 2027-01-15
    kl = start_keyloom(clock=clock, CLIENT_KEYS=config(expires="2027-01-16"), QUOTA_RESET_TZ="UTC")
    assert chat(kl, FRIEND).status_code == 200
    clock.advance(2 * 86400)
    r = chat(kl, FRIEND)
    assert r.status_code == 401 and r.json()["error"]["code"] == "client_key_expired"
    assert "2027-01-16" in r.json()["error"]["message"]
    # Claude Code retries a 401 for minutes: on the Messages API an expired key is a 400 that says why
    with pytest.raises(anthropic.BadRequestError) as e:
        track(anthropic.Anthropic(base_url=kl.url, api_key=FRIEND, max_retries=0)).messages.create(
            model="gemini-2.5-flash", max_tokens=50, messages=HELLO)
    assert "expired on 2027-01-16" in e.value.body["error"]["message"]


def test_usage_per_key_and_the_request_log_name_the_client(start_keyloom, fake, loop_thread):
    kl = start_keyloom(CLIENT_KEYS=config(), ADMIN_PASSWORD=ADMIN)
    chat(kl, FRIEND)
    chat(kl, FRIEND, "gemini-2.0-flash")
    chat(kl, PASSWORD)
    loop_thread.run(kl.kl.flusher.flush())
    rows = loop_thread.run(kl.kl.db.fetchall("SELECT key_id, model, requests, tokens FROM client_key_usage "
                                             "ORDER BY model"))
    assert [(m, r) for _, m, r, _ in rows] == [("gemini-2.0-flash", 1), ("gemini-2.5-flash", 1)]
    assert all(t > 0 for *_, t in rows)
    logged = loop_thread.run(kl.kl.db.fetchall("SELECT client FROM request_log ORDER BY id"))
    assert logged == [("friend",), ("friend",), (None,)]
    with admin(kl) as h:
        entry = h.get("/api/client-keys").json()["client_keys"][0]
        shown = [r["client"] for r in h.get("/api/requests").json()["requests"]]
    assert entry["usage"]["today"]["requests"] == 2 and entry["usage"]["days"][-1]["requests"] == 2
    assert shown == [None, "friend", "friend"]  # newest first, as the dashboard lists them


def test_usage_survives_a_restart(start_keyloom, fake, loop_thread, tmp_path):
    kl = start_keyloom(CLIENT_KEYS=config(daily_requests=2), data_dir=tmp_path / "d")
    assert chat(kl, FRIEND).status_code == 200
    loop_thread.run(kl.kl.stop(0))
    again = start_keyloom(CLIENT_KEYS=config(daily_requests=2), data_dir=tmp_path / "d")
    assert chat(again, FRIEND).status_code == 200
    assert chat(again, FRIEND).status_code == 429


def test_wrong_keys_still_count_as_guesses(start_keyloom, fake):
    kl = start_keyloom(CLIENT_KEYS=config(), ADMIN_LOGIN_ATTEMPTS="3")
    assert [chat(kl, "kl-wrong-" + str(i)).status_code for i in range(4)] == [401, 401, 401, 429]


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_the_readmes_client_keys_example_is_one_keyloom_takes(readme):
    from tests.conftest import ROOT
    text = (ROOT / readme).read_text(encoding="utf-8")
    example = text.split("CLIENT_KEYS='", 1)[1].split("'\n", 1)[0]
    keys = parse_config(example)
    assert [fields["name"] for _, fields in keys] == ["alice", "my-agent"]
    assert all(key.isascii() and len(key) >= 24 for key, _ in keys)  # a key a client can send in a header


def test_a_key_made_on_the_dashboard_is_masked_wherever_a_client_echoes_it(start_keyloom, fake, loop_thread):
    """Keys made on the dashboard are stored as hashes: the redactor knows them by their shape."""
    kl = start_keyloom(ADMIN_PASSWORD=ADMIN)
    with admin(kl) as h:
        key = h.post("/api/client-keys", json={"name": "echo"}).json()["key"]
    with kl.http() as h:
        r = h.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": key, "messages": HELLO})
    assert r.status_code in (400, 404) and key not in r.text and key[3:20] not in r.text
    loop_thread.run(kl.kl.flusher.flush())
    raw = b"".join(p.read_bytes() for p in kl.kl.data_dir.glob("keyloom.db*"))
    assert key.encode() not in raw and key[3:20].encode() not in raw


def test_limits_beyond_any_use_are_refused_and_a_refused_change_changes_nothing(start_keyloom, fake):
    kl = start_keyloom(ADMIN_PASSWORD=ADMIN)
    with admin(kl) as h:
        assert h.post("/api/client-keys", json={"name": "x", "rpm": 10 ** 20}).status_code == 400
        made = h.post("/api/client-keys", json={"name": "y", "daily_tokens": 1000}).json()
        assert h.put(f"/api/client-keys/{made['id']}", json={"daily_tokens": 2 ** 63}).status_code == 400
        assert h.get("/api/client-keys").json()["client_keys"][0]["daily_tokens"] == 1000


def test_count_tokens_holds_a_keys_model_list(start_keyloom, fake):
    kl = start_keyloom(CLIENT_KEYS=config(models=["gemini-2.0-*"]))
    c = track(anthropic.Anthropic(base_url=kl.url, api_key=FRIEND, max_retries=0))
    with pytest.raises(anthropic.PermissionDeniedError):
        c.messages.count_tokens(model="gemini-2.5-pro", messages=HELLO)
    assert c.messages.count_tokens(model="gemini-2.0-flash", messages=HELLO).input_tokens == 1
