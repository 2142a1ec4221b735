"""Real Gemini clients through Keyloom's Gemini API routes: google-genai (Python), LiteLLM's `gemini/`
provider, @ai-sdk/google with `ai` (node) and Gemini CLI (node, `gemini -p`, pointed at Keyloom with
GOOGLE_GEMINI_BASE_URL).

Each one: a completion and a stream, a blocked prompt passed through as Gemini sent it, a pool-wide 429 that
it stops on (counted in requests Keyloom received, not in time), and both ends a stream can have: Gemini's own
finish reason (nothing added after it) and Keyloom's error after the stream started (reported with Keyloom's
message, no garbled JSON).

Loopback only: the node clients run with tests/clients/loopback_only.cjs (a connection anywhere else is refused
before any name lookup, and noted), the Python clients under `loopback_only` below; Gemini CLI also has its
telemetry, usage statistics and update checks off and a HOME of its own. The node clients are installed by
`npm ci --prefix tests/clients` (.ci/run does it)."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.conftest import KEYS, PASSWORD, ROOT, Running
from tests.fake_gemini import FakeGemini, Reply, function_call_reply, last_user_text, text_reply

MODEL = "gemini-2.5-flash"
BLOCK = "please-block-this-prompt"
CLIENTS = ROOT / "tests" / "clients"
GEMINI_CLI = CLIENTS / "node_modules" / "@google" / "gemini-cli" / "bundle" / "gemini.js"
AI_SDK = CLIENTS / "ai_sdk_google.mjs"
BROKEN = "Gemini's stream ended before the reply was complete"  # Keyloom's error when a stream stops early
SAFETY_TIMEOUT = 120  # only so that a hung client fails the test instead of hanging it

BLOCKED = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
           "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
           "modelVersion": MODEL, "responseId": "blocked-1"}


def thoughts_then_max_tokens() -> list[dict[str, Any]]:
    """A stream that thought until the token limit: Gemini's own end, finishReason MAX_TOKENS, no answer."""
    return [{"candidates": [{"content": {"parts": [{"text": "Let me think this through.", "thought": True}],
                                         "role": "model"}, "index": 0}],
             "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 30, "thoughtsTokenCount": 21},
             "modelVersion": MODEL, "responseId": "len-1"},
            {"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}],
             "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 41, "thoughtsTokenCount": 32},
             "modelVersion": MODEL, "responseId": "len-1"}]


def started_then_stopped(text: str = "alpha bravo ") -> list[dict[str, Any]]:
    """A stream that sends some of its answer and ends without a finish reason."""
    return [{"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
             "modelVersion": MODEL, "responseId": "cut-1"}]


def answer_by_prompt(fake: FakeGemini, text: str = "alpha bravo charlie delta") -> None:
    """Gemini blocks prompts holding BLOCK and answers `text` to the others."""
    fake.responder = lambda rec: Reply(body=BLOCKED if BLOCK in last_user_text(rec.body or {}) else text_reply(text))


def every_key_over_todays_quota(keyloom: Running, fake: FakeGemini) -> None:
    """Every key hits Google's daily quota once; from then on the pool refuses without asking Google."""
    for k in KEYS:
        fake.keys[k] = "quota_day"
    with keyloom.http() as http:
        r = http.post(f"/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": PASSWORD},
                      json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 429


class Received:
    """Generate and stream requests that reached Keyloom's Gemini routes (whatever Keyloom then answered);
    `second` is set when a second one arrives, so a test can stop a client that retries."""

    def __init__(self, keyloom: Running):
        self.calls: list[str] = []
        self.second = threading.Event()
        native = keyloom.kl.native
        admit = native.admit

        async def counting(model: str, method: str, *args: Any, **kw: Any) -> None:
            if method in ("generateContent", "streamGenerateContent"):
                self.calls.append(method)
                if len(self.calls) > 1:
                    self.second.set()
            await admit(model, method, *args, **kw)

        native.admit = counting  # type: ignore[method-assign]

    def reset(self) -> None:
        self.calls.clear()
        self.second.clear()


def quota_failure(details: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(quotaIds, retryDelays) in google.rpc details."""
    ids = [v["quotaId"] for d in details if d.get("@type", "").endswith("google.rpc.QuotaFailure")
           for v in d["violations"]]
    delays = [d["retryDelay"] for d in details if d.get("@type", "").endswith("google.rpc.RetryInfo")]
    return ids, delays


# -- loopback only ------------------------------------------------------------------------------------------

def _loopback(host: Any) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Python code in this process (the clients, Keyloom, the fake) reaches loopback only: any other address
    or name is refused before it is looked up, and the test fails."""
    refused: list[str] = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            refused.append(str(address[0]))
            raise ConnectionRefusedError(f"{address[0]}: the tests allow loopback only")

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        return connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return connect_ex(sock, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if not _loopback(host.decode() if isinstance(host, bytes) else host):
            refused.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: the tests allow loopback only")
        return getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield refused
    assert refused == [], f"a client tried to leave loopback: {refused}"


# -- google-genai (Python) ----------------------------------------------------------------------------------

def genai_client(keyloom: Running, version: str | None = "v1beta", key: str = PASSWORD) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=keyloom.url, api_version=version,
                                                                    timeout=20_000))


def test_google_genai_gets_geminis_answers_as_sent(keyloom, fake):
    answer_by_prompt(fake)
    client = genai_client(keyloom)
    assert client.models.generate_content(model=MODEL, contents="hi").text == "alpha bravo charlie delta"
    assert "".join(r.text or "" for r in client.models.generate_content_stream(model=MODEL, contents="hi")) == \
        "alpha bravo charlie delta"
    blocked = client.models.generate_content(model=MODEL, contents=BLOCK)
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    [event] = list(client.models.generate_content_stream(model=MODEL, contents=BLOCK))
    assert event.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT and not event.candidates
    # the fake answers as Gemini would: a call with a thought signature, thoughts asked in snake_case
    fake.responder = lambda rec: Reply(body=function_call_reply("get_weather", {"city": "Oslo"}))
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True), tools=[
        types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", description="weather")])])
    call = client.models.generate_content(model=MODEL, contents="weather in Oslo?", config=config)
    assert call.function_calls[0].name == "get_weather" and call.function_calls[0].args == {"city": "Oslo"}
    assert call.candidates[0].content.parts[0].thought_signature
    fake.responder = None
    thought = client.models.generate_content(model=MODEL, contents="think", config=config)
    assert [p.thought for p in thought.candidates[0].content.parts] == [True, None]


def test_google_genai_stops_on_a_pool_wide_429_told_per_day_or_per_minute(keyloom, fake):
    received = Received(keyloom)
    client = genai_client(keyloom)
    for k in KEYS:
        fake.keys[k] = "quota_minute"
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(model=MODEL, contents="x")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"
    ids, delays = quota_failure(e.value.details["error"]["details"])
    assert [i for i in ids if "PerMinute" in i] and not [i for i in ids if "PerDay" in i] and delays == ["47s"]
    for k in KEYS:
        fake.keys[k] = "quota_day"
    pool = keyloom.kl.pool
    for key in pool.keys:  # the keys cool down for 47s: give them back at once, as an owner can
        keyloom.loop.call(pool.reset_today, key)
    received.reset()
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(model=MODEL, contents="x")
    ids, delays = quota_failure(e.value.details["error"]["details"])
    assert [i for i in ids if "PerDay" in i] and delays  # the delay: until the quota day ends
    assert "Every key is over its quota" in e.value.message
    with pytest.raises(genai_errors.ClientError) as e:  # now refused without asking Google: the same form
        list(client.models.generate_content_stream(model=MODEL, contents="x"))
    ids, _ = quota_failure(e.value.details["error"]["details"])
    assert [i for i in ids if "PerDay" in i]
    assert received.calls == ["generateContent", "streamGenerateContent"]  # google-genai retried neither


def test_google_genai_reads_both_ends_of_a_stream(keyloom, fake):
    client = genai_client(keyloom)
    fake.responder = lambda rec: Reply(events=thoughts_then_max_tokens())
    events = list(client.models.generate_content_stream(model=MODEL, contents="think hard"))
    assert events[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS  # and no error after it
    fake.responder = lambda rec: Reply(events=started_then_stopped())
    texts = []
    with pytest.raises(genai_errors.APIError) as e:
        for r in client.models.generate_content_stream(model=MODEL, contents="go"):
            texts.append(r.text)
    assert texts == ["alpha bravo "] and e.value.code == 502 and BROKEN in e.value.message


def test_wrong_key_and_unknown_model_name_what_gemini_clients_send(keyloom, fake):
    for version in (None, "v1beta"):  # google-genai as shipped asks for v1
        wrong, right = genai_client(keyloom, version, key="not-the-password"), genai_client(keyloom, version)
        with pytest.raises(genai_errors.ClientError) as e:
            wrong.models.generate_content(model=MODEL, contents="x")
        assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"
        assert "x-goog-api-key" in e.value.message and "?key=" in e.value.message
        assert "Bearer" not in e.value.message
        with pytest.raises(genai_errors.ClientError) as e:
            right.models.generate_content(model="no-such-model", contents="x")
        assert e.value.code == 404 and f"for API version {version or 'v1'}," in e.value.message
    with keyloom.http() as http:
        r = http.post(f"/gemini/v1beta/models/{MODEL}:generateContent", params={"key": "wrong"}, json={})
        assert r.status_code == 401 and "?key=" in r.json()["error"]["message"]
        r = http.get("/v1/models/no-such-model", headers={"x-goog-api-key": PASSWORD, "x-goog-api-client": "x"})
        assert r.status_code == 404 and "for API version v1," in r.json()["error"]["message"]
        r = http.get("/v1/models", headers={"Authorization": "Bearer wrong"})  # OpenAI clients keep theirs
        assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]


# -- LiteLLM's gemini/ provider -------------------------------------------------------------------------------

# LiteLLM builds pydantic adapters of TypedDicts with ReadOnly items (its GitHub Copilot auth, its thinking
# blocks) the first time a process needs them, and pydantic warns about each: its warning, not ours, and which
# test meets it first depends on the order a run takes.
litellm_warnings = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning")


@pytest.fixture
def litellm(monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # or it fetches its price list at import
    monkeypatch.setenv("LITELLM_LOG", "ERROR")
    with warnings.catch_warnings():  # what LiteLLM's own import warns about (its dependencies' deprecations,
        warnings.simplefilter("ignore")  # which depend on what the process imported before) is not Keyloom's
        import litellm as module
    module.suppress_debug_info = True
    module.telemetry = False
    return module


def litellm_call(litellm, keyloom: Running, prompt: str, stream: bool = False) -> tuple[str, str | None]:
    """→ (text, finish_reason) as LiteLLM gives them."""
    kw = {"model": f"gemini/{MODEL}", "api_base": f"{keyloom.url}/v1beta", "api_key": PASSWORD, "timeout": 20,
          "messages": [{"role": "user", "content": prompt}]}
    if not stream:
        r = litellm.completion(**kw)
        return r.choices[0].message.content or "", r.choices[0].finish_reason
    text, finish = "", None
    for chunk in litellm.completion(stream=True, **kw):
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    return text, finish


@litellm_warnings
def test_litellm_gets_geminis_answers_as_sent(litellm, keyloom, fake):
    answer_by_prompt(fake)
    assert litellm_call(litellm, keyloom, "hi") == ("alpha bravo charlie delta", "stop")
    assert litellm_call(litellm, keyloom, "hi", stream=True) == ("alpha bravo charlie delta", "stop")
    assert litellm_call(litellm, keyloom, BLOCK) == ("", "content_filter")
    assert litellm_call(litellm, keyloom, BLOCK, stream=True) == ("", "content_filter")


@litellm_warnings
def test_litellm_stops_on_a_pool_wide_429(litellm, keyloom, fake):
    every_key_over_todays_quota(keyloom, fake)
    received = Received(keyloom)
    with pytest.raises(litellm.RateLimitError) as e:
        litellm_call(litellm, keyloom, "hi")
    body = json.loads(str(e.value)[str(e.value).index("{"):str(e.value).rindex("}") + 1])  # Gemini's body, quoted
    ids, delays = quota_failure(body["error"]["details"])
    assert [i for i in ids if "PerDay" in i] and delays and "Every key" in body["error"]["message"]
    with pytest.raises(litellm.ServiceUnavailableError) as e:  # streaming: wrapped (MidStreamFallbackError)
        litellm_call(litellm, keyloom, "hi", stream=True)
    assert isinstance(e.value.original_exception, litellm.RateLimitError)
    assert "KeyloomRequestsPerDay" in str(e.value) and "google.rpc.RetryInfo" in str(e.value)
    assert received.calls == ["generateContent", "streamGenerateContent"]


@litellm_warnings
def test_litellm_reads_both_ends_of_a_stream(litellm, keyloom, fake):
    fake.responder = lambda rec: Reply(events=thoughts_then_max_tokens())
    assert litellm_call(litellm, keyloom, "think hard", stream=True) == ("", "length")
    fake.responder = lambda rec: Reply(events=started_then_stopped())
    with pytest.raises(Exception) as e:  # noqa: B017 - LiteLLM wraps it (MidStreamFallbackError); its text counts
        litellm_call(litellm, keyloom, "go", stream=True)
    assert BROKEN in str(e.value) and "Incomplete JSON" not in str(e.value)


# -- node clients ---------------------------------------------------------------------------------------------

@pytest.fixture
def node_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a node client: loopback only (refused connections go to a log the test checks),
    HOME and TMPDIR of its own, no proxy."""
    if shutil.which("node") is None or not GEMINI_CLI.exists():
        why = "the npm clients are not installed: npm ci --prefix tests/clients"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "NO_COLOR": "1",
           "NODE_OPTIONS": f"--require {CLIENTS / 'loopback_only.cjs'}",
           "KEYLOOM_TEST_NET_LOG": str(tmp_path / "refused.log")}
    yield env
    log = tmp_path / "refused.log"
    assert not log.exists(), f"a node client tried to leave loopback: {log.read_text()}"


def ai_sdk(node_env: dict[str, str], keyloom: Running, *calls: tuple[str, str]) -> list[dict[str, Any]]:
    """(mode, prompt) calls through @ai-sdk/google, one node process: each → {text, finishReason, error}."""
    spec = {"baseURL": f"{keyloom.url}/v1beta", "apiKey": PASSWORD,
            "calls": [{"model": MODEL, "mode": mode, "prompt": prompt} for mode, prompt in calls]}
    done = subprocess.run(["node", str(AI_SDK), json.dumps(spec)], cwd=CLIENTS, env=node_env, capture_output=True,
                          text=True, timeout=SAFETY_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ai_sdk_gets_geminis_answers_as_sent(node_env, keyloom, fake):
    answer_by_prompt(fake)
    results = ai_sdk(node_env, keyloom, ("generate", "hi"), ("stream", "hi"), ("generate", BLOCK), ("stream", BLOCK))
    assert [(r["text"], r["finishReason"], r["error"]) for r in results] == [
        ("alpha bravo charlie delta", "stop", None), ("alpha bravo charlie delta", "stop", None),
        ("", "content-filter", None), ("", "content-filter", None)]


def test_ai_sdk_stops_on_a_pool_wide_429(node_env, keyloom, fake):
    every_key_over_todays_quota(keyloom, fake)
    received = Received(keyloom)
    [r] = ai_sdk(node_env, keyloom, ("generate", "hi"))
    error = r["error"]
    # @ai-sdk retries any 429 twice (2 s, then 4 s) whatever the body says, and then stops
    assert error["statusCode"] == 429 and error["attempts"] == 3 and len(received.calls) == 3
    ids, delays = quota_failure(error["data"]["error"]["details"])
    assert [i for i in ids if "PerDay" in i] and delays and "Every key" in error["message"]


def test_ai_sdk_reads_both_ends_of_a_stream(node_env, keyloom, fake):
    scripted = iter([Reply(events=thoughts_then_max_tokens()), Reply(events=started_then_stopped())])
    fake.responder = lambda rec: next(scripted)
    ended, broken = ai_sdk(node_env, keyloom, ("stream", "think hard"), ("stream", "go"))
    assert (ended["text"], ended["finishReason"], ended["error"]) == ("", "length", None)
    assert broken["text"] == "alpha bravo " and broken["error"]["statusCode"] == 502
    assert BROKEN in broken["error"]["message"]


@dataclass
class CliRun:
    proc: subprocess.Popen[bytes]
    out: bytearray
    seen: threading.Condition

    def wait_for(self, text: str) -> None:
        with self.seen:
            assert self.seen.wait_for(lambda: text.encode() in self.out or self.proc.poll() is not None,
                                      SAFETY_TIMEOUT), f"Gemini CLI did not show {text!r}"
        assert text.encode() in self.out, self.output()

    def finish(self) -> str:
        self.proc.wait(SAFETY_TIMEOUT)
        with self.seen:
            self.seen.wait_for(lambda: self.proc.stdout.closed, SAFETY_TIMEOUT)  # type: ignore[union-attr]
        return self.output()

    def output(self) -> str:
        return self.out.decode("utf-8", "replace")


def gemini_cli(node_env: dict[str, str], keyloom: Running, prompt: str, **general: Any) -> CliRun:
    """`gemini -m MODEL -p PROMPT` pointed at Keyloom (GOOGLE_GEMINI_BASE_URL, our password as GEMINI_API_KEY),
    with telemetry, usage statistics and update checks off; `general`: more of its general settings."""
    home = Path(node_env["HOME"])
    (home / ".gemini").mkdir(exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False, **general}}))
    work = home / "project"
    work.mkdir(exist_ok=True)
    env = {**node_env, "GEMINI_API_KEY": PASSWORD, "GOOGLE_GEMINI_BASE_URL": keyloom.url,
           "GEMINI_CLI_NO_RELAUNCH": "true", "GEMINI_CLI_TRUST_WORKSPACE": "true"}
    proc = subprocess.Popen(["node", str(GEMINI_CLI), "-m", MODEL, "-p", prompt], cwd=work, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run = CliRun(proc, bytearray(), threading.Condition())

    def read() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            with run.seen:
                run.out += chunk
                run.seen.notify_all()
        with run.seen:
            proc.stdout.close()
            run.seen.notify_all()

    threading.Thread(target=read, daemon=True).start()
    return run


def test_gemini_cli_gets_geminis_answers_as_sent(node_env, keyloom, fake):
    answer_by_prompt(fake, "Keyloom relayed this answer")
    out = gemini_cli(node_env, keyloom, "Say hi").finish()
    assert "Keyloom relayed this answer" in out
    calls = fake.generate_calls()  # the CLI streams its turns; a pooled key went on, not the password
    assert calls[0].action == "streamGenerateContent" and all(c.key in KEYS for c in calls)
    # Gemini CLI does not read promptFeedback: a blocked prompt (one event, no candidate) is to it a stream that
    # ended without a finish reason, as it is from Google; maxAttempts 1 spares its three content retries
    out = gemini_cli(node_env, keyloom, BLOCK, maxAttempts=1).finish()
    assert "Model stream ended without a finish reason" in out and "blocked the prompt" not in out


def test_gemini_cli_stops_on_a_pool_wide_429(node_env, keyloom, fake):
    every_key_over_todays_quota(keyloom, fake)
    received = Received(keyloom)
    run = gemini_cli(node_env, keyloom, "Say hi")
    settled = received.second  # set when it asks a second time, or (below) when it exits
    threading.Thread(target=lambda: (run.proc.wait(), settled.set()), daemon=True).start()
    assert settled.wait(SAFETY_TIMEOUT)
    if run.proc.poll() is None:  # it is retrying: enough seen
        run.proc.kill()
    out = run.finish()
    assert received.calls == ["streamGenerateContent"], out  # a QuotaFailure saying PerDay: it gave up at once
    assert "Every key is used up" in out


def test_gemini_cli_reads_both_ends_of_a_stream(node_env, keyloom, fake):
    fake.responder = lambda rec: Reply(events=thoughts_then_max_tokens())
    out = gemini_cli(node_env, keyloom, "think hard", maxAttempts=1).finish()
    assert "exceeded the token limit" in out and "held only thoughts" not in out  # it read MAX_TOKENS
    # The error after the start: Gemini CLI's google-genai (1.30) finds it only in a network read of its own,
    # so the stream breaks once the CLI has shown what came before it.
    release = threading.Semaphore(0)
    fake.responder = lambda rec: Reply(events=started_then_stopped("alpha bravo "), hold=release)
    run = gemini_cli(node_env, keyloom, "go", maxAttempts=1)
    run.wait_for("alpha bravo")
    release.release()
    out = run.finish()
    assert BROKEN in out and "Incomplete JSON" not in out
