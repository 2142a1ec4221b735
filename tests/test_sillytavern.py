"""SillyTavern itself (the npm package `sillytavern`, pinned in tests/clients) in front of Keyloom, through both of
its sources: "Custom (OpenAI-compatible)" pointed at Keyloom's /v1, and "Google AI Studio" with Keyloom as its
reverse proxy (SillyTavern then sends the proxy password as `?key=`).

SillyTavern is a web page plus a node server; the page builds a request and posts it to the server's
`/api/backends/chat-completions/generate`, and the server talks to the API. These tests start the real server
(loopback only, CSRF off, a data root of its own) and post what the page posts, field for field as
public/scripts/openai.js builds it, so everything between SillyTavern and Keyloom is SillyTavern's own code.
What the page does with an answer (the empty message a 200-then-error left behind) is read from its code, not
driven: the status the server forwards is what decides it."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import KEYS, PASSWORD, ROOT, Running
from tests.fake_gemini import Reply, text_reply
from tests.support.proc import free_port
from tests.support.wait import wait_until

CLIENTS = ROOT / "tests" / "clients"
SILLYTAVERN = CLIENTS / "node_modules" / "sillytavern"
MODEL = "gemini-2.5-flash"
STARTUP_TIMEOUT = 600  # its first start compiles the page's libraries with webpack: minutes on a busy machine
SAFETY_TIMEOUT = 120  # only so that a hung request fails the test instead of hanging it
# what SillyTavern's own config.yaml would make it do beyond loopback: resolve Docker's host names for its
# whitelist, check for plugin updates
CONFIG = """\
listen: false
port: {port}
whitelistMode: true
whitelist: ["127.0.0.1", "::1"]
whitelistDockerHosts: false
enableServerPlugins: false
enableServerPluginsAutoUpdate: false
browserLaunch:
  enabled: false
"""


@dataclass
class SillyTavern:
    url: str
    log: list[str]

    def generate(self, body: dict[str, Any], **kw: Any) -> httpx.Response:
        with httpx.Client(timeout=SAFETY_TIMEOUT) as http:
            return http.post(f"{self.url}/api/backends/chat-completions/generate", json=body, **kw)

    def write_secret(self, key: str, value: str) -> None:
        with httpx.Client(timeout=SAFETY_TIMEOUT) as http:
            r = http.post(f"{self.url}/api/secrets/write", json={"key": key, "value": value})
        assert r.status_code == 200, r.text


def require_sillytavern() -> None:
    """Skip on a developer machine without the npm clients; fail in CI, where .ci/run installs them."""
    if shutil.which("node") is None or not (SILLYTAVERN / "server.js").exists():
        why = "SillyTavern is not installed: npm ci --prefix tests/clients"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def sillytavern(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SillyTavern]:
    require_sillytavern()
    root = tmp_path_factory.mktemp("sillytavern")
    port = free_port()
    (root / "config.yaml").write_text(CONFIG.format(port=port))
    (root / "home").mkdir()
    refused = root / "refused.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(root / "home"), "LANG": "C.UTF-8", "NO_COLOR": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "NODE_OPTIONS": f"--require {CLIENTS / 'loopback_only.cjs'}", "KEYLOOM_TEST_NET_LOG": str(refused)}
    proc = subprocess.Popen(
        ["node", "server.js", "--configPath", str(root / "config.yaml"), "--dataRoot", str(root / "data"),
         "--port", str(port), "--listen", "false", "--enableIPv6", "false", "--enableIPv4", "true",
         "--browserLaunchEnabled", "false", "--disableCsrf", "true"],
        cwd=SILLYTAVERN, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    listening = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if "is listening on" in line:
                listening.set()
        listening.set()  # it ended: the wait below sees why
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        listening.wait(STARTUP_TIMEOUT)
        assert proc.poll() is None and any("is listening on" in line for line in log), "".join(log[-40:])
        yield SillyTavern(f"http://127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        reader.join(30)
        assert proc.stdout is not None
        proc.stdout.close()
    assert not refused.exists(), f"SillyTavern tried to leave loopback: {refused.read_text()}"


def page_body(**source: Any) -> dict[str, Any]:
    """What SillyTavern's page posts for a chat completion (public/scripts/openai.js, createGenerationParameters),
    with its defaults: max_tokens 300, the sampler values of its default preset."""
    return {"type": "normal", "model": MODEL, "temperature": 1, "frequency_penalty": 0, "presence_penalty": 0,
            "top_p": 1, "max_tokens": 300, "stream": False, "user_name": "User", "char_name": "Seraphina",
            "group_names": [], "include_reasoning": False, "reasoning_effort": "medium", "enable_web_search": False,
            "request_images": False, "request_image_resolution": "", "request_image_aspect_ratio": "",
            "custom_prompt_post_processing": "", "verbosity": "auto",
            "messages": [{"role": "system", "content": "You are Seraphina."},
                         {"role": "user", "content": "Hello there"}], **source}


def custom(keyloom: Running, **kw: Any) -> dict[str, Any]:
    fields = {"custom_include_body": "", "custom_exclude_body": "", "custom_include_headers": "", **kw}
    return page_body(chat_completion_source="custom", custom_url=keyloom.base_url, **fields)


def ai_studio(keyloom: Running, password: str = PASSWORD, **kw: Any) -> dict[str, Any]:
    return page_body(chat_completion_source="makersuite", reverse_proxy=keyloom.url, proxy_password=password,
                     top_k=0, stop=[], use_sysprompt=True, **kw)


def sse_data(text: str) -> list[Any]:
    return [json.loads(line[5:]) for line in text.splitlines()
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")]


@pytest.fixture
def keyloom(start_keyloom: Any, sillytavern: SillyTavern) -> Running:
    kl = start_keyloom()
    sillytavern.write_secret("api_key_custom", PASSWORD)  # the "Custom" source's API key field
    return kl


# -- Custom (OpenAI-compatible) ----------------------------------------------------------------------------------

def test_custom_source_answers_with_and_without_streaming(sillytavern, keyloom, fake):
    fake.responder = lambda rec: Reply(body=text_reply("Greetings, traveller."))
    r = sillytavern.generate(custom(keyloom))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Greetings, traveller."
    r = sillytavern.generate(custom(keyloom, stream=True))
    assert r.status_code == 200, r.text
    chunks = sse_data(r.text)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        "Greetings, traveller."
    # what reached Gemini: SillyTavern's system prompt as the system instruction, its 300 tokens as the limit,
    # and no thinking budget: its Reasoning Effort is not sent for a custom source with a Gemini model name
    # (the README says to use a model suffix or Include Body instead)
    for call in fake.generate_calls():
        assert call.body["systemInstruction"] == {"parts": [{"text": "You are Seraphina."}]}
        assert call.body["generationConfig"]["maxOutputTokens"] == 300
        thinking = call.body["generationConfig"].get("thinkingConfig", {})
        assert "thinkingBudget" not in thinking and "thinkingLevel" not in thinking
    # ... and Include Body does reach it
    before = len(fake.generate_calls())
    r = sillytavern.generate(custom(keyloom, custom_include_body="reasoning_effort: high"))
    assert r.status_code == 200, r.text
    [call] = fake.generate_calls()[before:]
    assert call.body["generationConfig"]["thinkingConfig"]["thinkingBudget"] > 0


def test_custom_source_quick_failures_keep_their_status_with_fake_streaming(sillytavern, keyloom, fake):
    """With fake streaming on, an answer Gemini refuses at once reaches SillyTavern as an error status (which its
    page shows as an error), not as 200 plus an error event (which leaves an empty message to delete)."""
    assert keyloom.kl.settings.FAKE_STREAMING is True  # the default
    for k in KEYS:
        fake.keys[k] = "quota_day"
    r = sillytavern.generate(custom(keyloom, stream=True))
    assert r.status_code == 429, r.text
    error = json.loads(r.text)["error"]
    assert "frees up at" in error["message"] and "Please retry in" not in error["message"]
    assert not sse_data(r.text)


def test_custom_source_stop_cancels_the_upstream_call_with_the_include_header(sillytavern, keyloom, fake,
                                                                               loop_thread):
    """Stop in SillyTavern closes its request; its server then aborts the call to Keyloom; with
    `X-Keyloom-Cancel: on-close` (Include Headers) Keyloom gives up the Gemini call too and logs a 499."""
    arrived = threading.Event()

    def hold(rec: Any) -> Reply:
        arrived.set()
        return Reply(delay=SAFETY_TIMEOUT)
    fake.responder = hold
    body = json.dumps(custom(keyloom, custom_include_headers="X-Keyloom-Cancel: on-close")).encode()
    port = int(sillytavern.url.rsplit(":", 1)[1])
    page = socket.create_connection(("127.0.0.1", port))  # the page's request, held open until Stop
    page.sendall(f"POST /api/backends/chat-completions/generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    wait_until(arrived.is_set, "the request to reach Gemini")
    page.close()  # Stop
    wait_until(lambda: fake.cancelled == 1, "Keyloom to give up the upstream call")
    wait_until(lambda: keyloom.kl.in_flight == 0, "the request to end")
    loop_thread.run(keyloom.kl.flusher.flush())
    [(status,)] = loop_thread.run(keyloom.kl.db.fetchall("SELECT status FROM request_log"))
    assert status == 499


# -- Google AI Studio, Keyloom as the reverse proxy ----------------------------------------------------------------

def test_ai_studio_source_through_keyloom_as_reverse_proxy(sillytavern, keyloom, fake):
    fake.responder = lambda rec: Reply(body=text_reply("Well met."))
    r = sillytavern.generate(ai_studio(keyloom))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Well met."
    r = sillytavern.generate(ai_studio(keyloom, stream=True))
    assert r.status_code == 200, r.text
    events = sse_data(r.text)  # Gemini's own events, passed through SillyTavern to its page
    assert "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"].get("parts", [])) == \
        "Well met."
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    calls = fake.generate_calls()
    assert [c.action for c in calls] == ["generateContent", "streamGenerateContent"]
    # the pool's key went upstream, never the proxy password SillyTavern sent as ?key=
    assert {c.key for c in calls} <= set(KEYS) and all(PASSWORD not in json.dumps(c.query) for c in calls)


def test_ai_studio_source_with_a_wrong_password_is_told_about_key(sillytavern, keyloom, fake):
    wrong = "not-the-password-123"
    r = sillytavern.generate(ai_studio(keyloom, password=wrong))
    assert r.status_code == 500  # SillyTavern answers every upstream error of this source as a 500 ...
    error = r.json()["error"]  # ... with the upstream's JSON: Google's shape, which its page shows
    assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED"
    assert "?key=" in error["message"] and "Authorization: Bearer" not in error["message"]
    assert wrong not in r.text and fake.generate_calls() == []
    r = sillytavern.generate(ai_studio(keyloom, password=wrong, stream=True))
    assert r.status_code == 401 or r.status_code == 400  # its forwarder turns a 401 into a 400
    assert "?key=" in r.json()["error"]["message"]


def test_sillytavern_defaults_the_readme_warns_about():
    """The README's SillyTavern notes rest on these of the pinned version: 300 response tokens by default, and
    Reasoning Effort forwarded for a custom source only for OpenAI's own model names."""
    require_sillytavern()
    settings = json.loads((SILLYTAVERN / "default" / "content" / "settings.json").read_text())
    assert settings["oai_settings"]["openai_max_tokens"] == 300
    source = (SILLYTAVERN / "src" / "endpoints" / "backends" / "chat-completions.js").read_text()
    assert "OPENAI_REASONING_EFFORT_MODELS.includes(request.body.model)" in source
