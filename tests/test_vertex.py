"""Vertex AI behind Keyloom: service accounts signing real JWTs for a fake token endpoint, regional and
global URLs, express keys, token reuse and one refresh under load, a 401 forcing one refresh and one
retry, and the completions, streams and tool calls of the Gemini tests."""
from __future__ import annotations

import concurrent.futures
import json
import time

import pytest

from server.clock import ManualClock
from server.providers.config import VertexConfig
from server.providers.vertex import VertexClient
from server.upstream.http import HttpClient
from tests.fake_gemini import Reply, function_call_reply, make_service_account

HI = [{"role": "user", "content": "hello vertex"}]
EXPRESS = "AQ.Ab8RN6EXPRESSKEY-0123456789abcdef"


@pytest.fixture(scope="module")
def accounts(fake_server):
    return [make_service_account(fake_server, f"sa{i}@proj-{i}.iam.gserviceaccount.com", f"proj-{i}")
            for i in (1, 2)]


def vertex_env(fake, creds, **extra):
    env = {"ENABLE_VERTEX": "true", "GOOGLE_CREDENTIALS_JSON": json.dumps(creds), "VERTEX_BASE_URL": fake.base_url,
           "GEMINI_API_KEYS": ""}
    env.update(extra)
    return env


def calls(fake, action="generateContent"):
    return [r for r in fake.requests if r.action == action]


def test_completion_through_a_service_account_global(start_keyloom, fake, accounts):
    running = start_keyloom(**vertex_env(fake, accounts[:1]))
    out = running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert out.choices[0].message.content
    [call] = calls(fake)
    assert call.path == "/v1/projects/proj-1/locations/global/publishers/google/models/gemini-2.5-flash:generateContent"
    assert call.key == "sa:sa1@proj-1.iam.gserviceaccount.com"
    assert all("role" in c for c in call.body["contents"])  # Vertex requires a role on every content
    assert fake.token_requests == 1
    ids = [m.id for m in running.client().models.list()]
    assert ids == ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3.1-pro-preview",
                   "gemini-3-flash-preview"]


def test_regional_location_and_project_override(start_keyloom, fake, accounts):
    running = start_keyloom(**vertex_env(fake, accounts[:1], VERTEX_LOCATION="us-central1",
                                         VERTEX_PROJECT_ID="other-project"))
    running.client().chat.completions.create(model="gemini-2.5-pro", messages=HI)
    [call] = calls(fake)
    assert call.path.startswith("/v1/projects/other-project/locations/us-central1/publishers/google/models/")


def test_hosts_without_an_override():
    http = HttpClient()
    for loc, host in (("global", "aiplatform.googleapis.com"),
                      ("europe-west4", "europe-west4-aiplatform.googleapis.com")):
        client = VertexClient(http, VertexConfig(location=loc, models=("m",)), ManualClock())
        assert client.sa_origin.host == host and client.sa_origin.tls
        assert client.express_origin.host == "aiplatform.googleapis.com"


def test_express_keys(start_keyloom, fake):
    fake.allow(EXPRESS)
    running = start_keyloom(**vertex_env(fake, [], VERTEX_EXPRESS_API_KEY=EXPRESS, GOOGLE_CREDENTIALS_JSON=""))
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    [call] = calls(fake)
    assert call.path == "/v1/publishers/google/models/gemini-2.5-flash:generateContent" and call.key == EXPRESS
    assert fake.token_requests == 0
    key = next(k for k in running.kl.pool.keys if k.provider == "vertex")
    assert EXPRESS not in key.masked


@pytest.mark.parametrize("fake_streaming", ["true", "false"])
def test_streams_and_tool_calls(start_keyloom, fake, accounts, fake_streaming):
    running = start_keyloom(**vertex_env(fake, accounts[:1], FAKE_STREAMING=fake_streaming))
    text = "".join(c.choices[0].delta.content or "" for c in running.client().chat.completions.create(
        model="gemini-2.5-flash", messages=HI, stream=True) if c.choices)
    assert text
    assert calls(fake, "streamGenerateContent" if fake_streaming == "false" else "generateContent")
    fake.script.append(Reply(body=function_call_reply("get_weather", {"city": "Paris"})))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    out = running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI, tools=tools)
    call = out.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    follow = HI + [out.choices[0].message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=follow, tools=tools)
    last = calls(fake)[-1].body
    assert last["contents"][-1]["parts"][0]["functionResponse"]["name"] == "get_weather"
    assert last["contents"][-2]["parts"][0]["thoughtSignature"]


def test_tokens_are_reused_then_refreshed_once_under_load(start_keyloom, fake, accounts):
    clock = ManualClock(time.time())
    running = start_keyloom(clock=clock, **vertex_env(fake, accounts[:1]))
    fake.token_ttl = 400       # the first token lives 400 s: renewed once fewer than 300 s are left
    for _ in range(5):
        running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert fake.token_requests == 1
    clock.advance(150)         # now within five minutes of its expiry
    fake.token_ttl = 3600
    fake.token_delay = 0.3     # the refresh takes a while: everyone arrives while it runs
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: running.client().chat.completions.create(model="gemini-2.5-flash",
                                                                                  messages=HI), range(8)))
    assert all(o.choices[0].message.content for o in outs)
    assert fake.token_requests == 2
    sa = next(iter(running.kl.router.vertex[1].accounts.values()))
    assert sa.refreshes == 2


def test_a_401_forces_one_refresh_and_one_retry(start_keyloom, fake, accounts):
    running = start_keyloom(**vertex_env(fake, accounts[:1], MAX_RETRY_NUM="1"))
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    fake.vertex_tokens.clear()  # Google no longer accepts the token Keyloom holds
    out = running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert out.choices[0].message.content
    assert fake.token_requests == 2
    statuses = [r.key for r in calls(fake)]
    assert statuses[-2:] == ["sa-token-rejected", "sa:sa1@proj-1.iam.gserviceaccount.com"]
    key = next(k for k in running.kl.pool.keys if k.provider == "vertex")
    assert key.disabled_reason is None


def test_two_accounts_rotate_and_quota_moves_on(start_keyloom, fake, accounts):
    running = start_keyloom(**vertex_env(fake, accounts))
    fake.keys["sa:sa1@proj-1.iam.gserviceaccount.com"] = "quota_minute"
    for _ in range(3):
        running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    used = [r.key for r in calls(fake)]
    assert used == ["sa:sa1@proj-1.iam.gserviceaccount.com"] + ["sa:sa2@proj-2.iam.gserviceaccount.com"] * 3
    paths = {r.path.split("/locations")[0] for r in calls(fake)}
    assert "/v1/projects/proj-2" in paths  # each account in its own project


def test_no_private_key_material_anywhere(start_keyloom, fake, accounts, caplog):
    running = start_keyloom(**vertex_env(fake, accounts[:1], LOG_LEVEL="DEBUG"))
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    pem_line = accounts[0]["private_key"].splitlines()[1]
    with running.http(headers={"Authorization": f"Bearer {running.kl.admin_password}"}) as http:
        for path in ("/api/status", "/api/settings", "/api/requests", "/health", "/v1/models"):
            body = http.get(path).text
            assert pem_line not in body and accounts[0]["private_key_id"] not in body
    assert pem_line not in caplog.text


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_answers_validate_against_the_openai_spec(start_keyloom, fake, accounts, stream):
    from tests.support.openai_schema import validate
    running = start_keyloom(**vertex_env(fake, accounts[:1], FAKE_STREAMING="false"))
    body = {"model": "gemini-2.5-flash", "messages": HI, "stream": stream, "reasoning_effort": "low"}
    if stream:
        body["stream_options"] = {"include_usage": True}
    with running.http() as http:
        r = http.post("/v1/chat/completions", headers=running.auth(), json=body)
    assert r.status_code == 200
    if not stream:
        validate("CreateChatCompletionResponse", r.json())
        return
    chunks = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    assert chunks[-1]["usage"]["total_tokens"] > 0 and r.text.endswith("data: [DONE]\n\n")
    [call] = calls(fake, "streamGenerateContent")
    assert call.body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}
