"""A first start without traps, keys as Google issues them now, and hajimi's variables (issue 13, items 7–12
and 14): what a new user (or one coming from hajimi) meets in the first minutes."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import openai
import pytest

from server.catalog import FALLBACK_MODELS
from server.legacy import hajimi_env
from server.pool.policy import human_duration
from server.redact import Redactor, mask
from server.settings import ROOT, Settings, load_specs, resolve_data_dir
from tests.conftest import KEYS, PASSWORD, make_key
from tests.fake_gemini import Reply
from tests.support.admin import AdminClient
from tests.support.proc import KeyloomProcess
from tests.support.wait import wait_until

AQ_KEY = "AQ.Ab8RN6" + "Lq3vXyZ0123456789abcdefghijklmnopqrstuvwxyzABCD"  # the shape AI Studio issues since 2026
ADMIN = "first-start-admin-password"
HELLO = [{"role": "user", "content": "hi"}]


# -- 7. AQ. keys ------------------------------------------------------------------------------------

def test_an_aq_key_is_accepted_on_the_dashboard_and_masked_like_any_key(start_keyloom, fake):
    kl = start_keyloom(ADMIN_PASSWORD=ADMIN)
    admin = AdminClient(kl.url, ADMIN)
    r = admin.ok("POST", "keys", {"keys": AQ_KEY})
    assert r["malformed"] == [] and [k["key"] for k in r["added"]] == [AQ_KEY[:4] + "…" + AQ_KEY[-4:]]
    assert mask(AQ_KEY).startswith("AQ.A…")
    assert AQ_KEY not in admin.get("status").text
    admin.close()
    assert AQ_KEY not in Redactor()(f"Google says: key {AQ_KEY} is fine")


# -- 8. keys as people paste them ----------------------------------------------------------------------

@pytest.mark.parametrize("pasted", [
    '"{a}","{b}"',                     # quoted, as copied from a JSON file
    '["{a}", "{b}"]',                  # a JSON list
    "[{a},{b}]",                       # brackets
    "`{a}`\n`{b}`",                    # Markdown
    "'{a}' ; '{b}' ",
])
def test_keys_pasted_with_quotes_or_brackets_are_the_keys(pasted):
    a, b = make_key(21), make_key(22)
    env = {"GEMINI_API_KEYS": pasted.format(a=a, b=b)}
    assert Settings.from_env(env).GEMINI_API_KEYS == [a, b]


def test_start_warns_about_values_that_do_not_look_like_keys(fake, tmp_path):
    odd = "sk-proj-notAGeminiKey0000000000"
    p = KeyloomProcess(env={"GEMINI_API_KEYS": f"{KEYS[0]},{odd},{AQ_KEY}", "GEMINI_BASE_URL": fake.base_url,
                            "PASSWORD": PASSWORD, "ADMIN_PASSWORD": ADMIN}, data_dir=tmp_path).wait_ready()
    assert p.stop() == 0
    out = p.output()
    warning = [line for line in out.splitlines() if "do not look like Gemini keys" in line]
    assert len(warning) == 1 and "1 value(s)" in warning[0] and mask(odd) in warning[0]
    assert odd not in out and AQ_KEY not in out and KEYS[0] not in out


# -- 9. defaults for the 2026 free tier ----------------------------------------------------------------

def test_defaults_match_the_2026_free_tier():
    s = Settings.from_env({})
    assert s.API_KEY_DAILY_LIMIT == 20
    from server.pool.quota import DailyLimits
    limits = DailyLimits(lambda: s)
    assert limits.for_model("gemini-2.5-flash") == 20
    assert limits.for_model("gemma-3-27b-it") == 14400 and limits.for_model("gemini-embedding-001") == 1000
    retired = {"gemini-3-pro-preview", "gemini-1.5-pro", "gemini-1.5-flash"}
    assert not retired & set(s.VERTEX_MODELS) and not retired & set(FALLBACK_MODELS)


def test_model_daily_limits_take_glob_patterns_and_exact_names_first():
    s = Settings.from_env({"MODEL_DAILY_LIMITS": "gemini-*=5, gemini-2.5-pro=2", "API_KEY_DAILY_LIMIT": "9"})
    from server.pool.quota import DailyLimits
    limits = DailyLimits(lambda: s)
    assert (limits.for_model("gemini-2.5-pro"), limits.for_model("gemini-3-flash"), limits.for_model("x")) == (2, 5, 9)


# -- 10. start-up --------------------------------------------------------------------------------------

def test_run_py_refuses_an_old_python_with_one_clear_line():
    code = ("import sys; sys.version_info = (3, 10, 12, 'final', 0); sys.argv = ['run.py'];"
            f"exec(compile(open({str(ROOT / 'run.py')!r}).read(), 'run.py', 'exec'), {{'__name__': '__main__'}})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "Python 3.11" in out.stderr and "3.10" in out.stderr and "Traceback" not in out.stderr


def test_the_default_data_dir_is_next_to_the_program_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("") in (ROOT / "data", __import__("pathlib").Path("/data"))


def test_the_start_line_says_where_to_go_and_where_the_files_are(fake, tmp_path):
    p = KeyloomProcess(env={"GEMINI_API_KEYS": KEYS[0], "GEMINI_BASE_URL": fake.base_url, "PASSWORD": PASSWORD,
                            "ADMIN_PASSWORD": ADMIN, "DASHBOARD_PATH": "/panel"}, data_dir=tmp_path).wait_ready()
    assert p.stop() == 0
    out = p.output()
    base = f"http://127.0.0.1:{p.port}"
    line = next(x for x in out.splitlines() if "base URL for clients" in x)
    assert f"{base}/panel/" in line and f"{base}/chat" in line and f"{base}/v1" in line
    assert f"files in {tmp_path}" in out


# -- 11. the README's examples and providers ------------------------------------------------------------

def test_a_placeholder_provider_key_stops_start_up_naming_the_provider(tmp_path):
    providers = json.dumps({"openai": [{"name": "mine", "base_url": "http://127.0.0.1:9", "keys": ["sk-…"]}]})
    p = KeyloomProcess(env={"PROVIDERS": providers, "PASSWORD": PASSWORD, "ADMIN_PASSWORD": ADMIN},
                       data_dir=tmp_path)
    code = p.proc.wait(60)
    p._reader.join(5)
    out = p.output()
    assert code == 2 and "mine" in out and "keys[0]" in out and "Traceback" not in out


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


def test_an_unreachable_local_server_is_named_and_tried_at_most_three_times(start_keyloom, closed_port):
    providers = json.dumps({"openai": [{"name": "ollama", "base_url": f"http://127.0.0.1:{closed_port}/v1",
                                        "models": ["llama3.1:8b"]}]})
    kl = start_keyloom(PROVIDERS=providers, MAX_RETRY_NUM="15")
    with pytest.raises(openai.APIStatusError) as e:
        kl.client().chat.completions.create(model="llama3.1:8b", messages=HELLO)
    assert "could not reach ollama" in e.value.message and "Gemini" not in e.value.message
    assert "3 attempts" in e.value.message


def test_the_readmes_curl_examples_set_the_passwords_they_use():
    for name in ("README.md", "README.zh-CN.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        for block in text.split("```bash")[1:]:
            block = block.split("```", 1)[0]
            for var, file in (("$PASSWORD", "data/password"), ("$ADMIN_PASSWORD", "data/admin_password")):
                if var in block:  # the shell has no such variable unless the block sets it first
                    assert f"{var[1:]}=$(cat {file})" in block.split(var, 1)[0], (name, block[:120])


# -- 12. hajimi's variables ------------------------------------------------------------------------------

def test_hajimis_variables_are_carried_over_or_named():
    env, notes = hajimi_env({"ENABLE_VERTEX_EXPRESS": "true", "PUBLIC_MODE": "true", "STORAGE_DIR": "/hajimi/x",
                             "ENABLE_STORAGE": "true", "PRECISE_CACHE": "true", "GEMINI_API_KEYS": "k"})
    assert env["ENABLE_VERTEX"] == "true" and env["INFLIGHT_SHARING"] == "false" and env["DATA_DIR"] == "/hajimi/x"
    text = " ".join(notes)
    for name in ("ENABLE_VERTEX_EXPRESS", "PUBLIC_MODE", "STORAGE_DIR", "ENABLE_STORAGE", "PRECISE_CACHE"):
        assert name in text
    # Keyloom's own names win when both are set
    env, _ = hajimi_env({"PUBLIC_MODE": "true", "INFLIGHT_SHARING": "true", "DATA_DIR": "/d", "STORAGE_DIR": "/s"})
    assert env["INFLIGHT_SHARING"] == "true" and env["DATA_DIR"] == "/d"


def test_hajimis_vertex_express_mode_lists_and_serves_models(start_keyloom, fake):
    express = "AQ.express" + "k" * 40
    fake.allow(express)
    env, _ = hajimi_env({"ENABLE_VERTEX_EXPRESS": "true", "VERTEX_EXPRESS_API_KEY": express,
                         "VERTEX_BASE_URL": fake.base_url, "GEMINI_API_KEYS": ""})
    kl = start_keyloom(**{k: v for k, v in env.items()})
    ids = [m.id for m in kl.client().models.list()]
    assert "gemini-2.5-flash" in ids
    assert kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO).choices


def test_whitelist_user_agent_admits_only_the_named_clients(start_keyloom):
    kl = start_keyloom(WHITELIST_USER_AGENT="SillyTavern, my-script")
    with kl.http() as http:
        assert http.get("/v1/models", headers={**kl.auth(), "User-Agent": "curl/8"}).status_code == 403
        assert http.get("/v1/models", headers={**kl.auth(), "User-Agent": "sillytavern/1.13"}).status_code == 200
        assert http.get("/health", headers={"User-Agent": "curl/8"}).status_code == 200  # pages are not affected


def test_every_hajimi_setting_is_known_or_carried_over():
    hajimi = {"GEMINI_API_KEYS", "STORAGE_DIR", "ENABLE_STORAGE", "FAKE_STREAMING", "FAKE_STREAMING_INTERVAL",
              "MAX_EMPTY_RESPONSES", "RANDOM_STRING", "RANDOM_STRING_LENGTH", "ENABLE_VERTEX",
              "GOOGLE_CREDENTIALS_JSON", "ENABLE_VERTEX_EXPRESS", "VERTEX_EXPRESS_API_KEY", "PASSWORD", "WEB_PASSWORD",
              "MAX_REQUESTS_PER_MINUTE", "MAX_REQUESTS_PER_DAY_PER_IP", "MAX_RETRY_NUM", "CONCURRENT_REQUESTS",
              "INCREASE_CONCURRENT_ON_FAILURE", "MAX_CONCURRENT_REQUESTS", "API_KEY_DAILY_LIMIT",
              "CACHE_EXPIRY_TIME", "MAX_CACHE_ENTRIES", "PRECISE_CACHE", "CALCULATE_CACHE_ENTRIES", "SEARCH_MODE",
              "SEARCH_PROMPT", "BLOCKED_MODELS", "PUBLIC_MODE", "DASHBOARD_URL", "WHITELIST_MODELS",
              "WHITELIST_USER_AGENT", "ALLOWED_ORIGINS", "INVALID_API_KEYS"}
    known = set(load_specs())
    _, notes = hajimi_env({name: "true" for name in hajimi - known})
    named = " ".join(notes)
    assert not [n for n in hajimi - known if n not in named]


# -- 14. SillyTavern's four things ----------------------------------------------------------------------------

def test_every_key_over_its_daily_quota_says_one_wait(start_keyloom, fake):
    kl = start_keyloom()
    for k in KEYS:
        fake.keys[k] = "quota_day"
    with pytest.raises(openai.RateLimitError) as e:
        kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
    message = e.value.message
    seconds = int(e.value.response.headers["retry-after"])
    assert "Please retry in" not in message  # Google's per-call hint contradicted the pool's wait
    assert human_duration(seconds) in message and "frees up at" in message and "gemini-2.5-flash" in message


def test_a_request_the_client_hung_up_on_is_logged_as_such(start_keyloom, fake, loop_thread):
    kl = start_keyloom(FAKE_STREAMING="false", FLUSH_INTERVAL="60")
    arrived = threading.Event()

    def hold(rec):
        arrived.set()
        return Reply(delay=60)
    fake.responder = hold
    body = json.dumps({"model": "gemini-2.5-flash", "messages": HELLO}).encode()
    s = socket.create_connection(("127.0.0.1", kl.kl.port))
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PASSWORD}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    wait_until(arrived.is_set, "the request to reach the upstream")
    s.close()  # the user pressed Stop
    wait_until(lambda: kl.kl.in_flight == 0, "the request to end")
    loop_thread.run(kl.kl.flusher.flush())
    [(status,)] = loop_thread.run(kl.kl.db.fetchall("SELECT status FROM request_log"))
    assert status == 499
