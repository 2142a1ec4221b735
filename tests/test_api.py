"""The OpenAI-compatible API through the official `openai` SDK, against the fake Gemini.

Every JSON body and every chunk is validated against the OpenAI spec's schemas.
"""
from __future__ import annotations

import json
import time

import openai
import pytest

from tests.conftest import KEYS, PASSWORD
from tests.fake_gemini import Reply, function_call_reply, text_reply
from tests.support.openai_schema import validate

HELLO = [{"role": "user", "content": "hello there"}]


# -- models ------------------------------------------------------------------------------------

def test_models_are_listed_from_every_page_without_embedding_models(fake, start_keyloom):
    fake.page_size = 2
    kl = start_keyloom()
    raw = kl.client().models.with_raw_response.list()
    body = json.loads(raw.http_response.text)
    validate("ListModelsResponse", body)
    ids = [m["id"] for m in body["data"]]
    assert ids == ["gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro",
                   "gemini-3-pro-preview", "gemma-3-27b-it"]
    assert all(m["owned_by"] == "google" and m["object"] == "model" for m in body["data"])
    assert kl.kl.catalog.loaded_at is not None


def test_model_listing_followed_pagination(fake, start_keyloom, loop_thread):
    fake.page_size = 3
    kl = start_keyloom()
    fake.requests.clear()
    assert loop_thread.run(kl.kl.catalog.refresh())
    pages = [r for r in fake.requests if r.action == "listModels"]
    assert [r.query.get("pageToken") for r in pages] == [None, "3", "6"]
    assert all(r.key in KEYS for r in pages)


def test_blocked_models_are_not_listed_and_refused(start_keyloom, fake):
    kl = start_keyloom(BLOCKED_MODELS="gemini-2.5-pro, gemma-3-27b-it")
    ids = [m.id for m in kl.client().models.list().data]
    assert "gemini-2.5-pro" not in ids and "gemma-3-27b-it" not in ids and "gemini-2.5-flash" in ids
    with pytest.raises(openai.NotFoundError) as e:
        kl.client().chat.completions.create(model="gemini-2.5-pro", messages=HELLO)
    assert e.value.code == "model_not_found"
    assert fake.generate_calls() == []


def test_retrieve_model(keyloom):
    client = keyloom.client()
    m = client.models.retrieve("gemini-2.5-flash")
    validate("Model", m.model_dump(exclude_none=True))
    assert m.id == "gemini-2.5-flash"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gemini-0.1-nope")
    with keyloom.http() as h:
        r = h.get("/v1/models/models/gemini-2.5-flash", headers=keyloom.auth())
        assert r.status_code == 200 and r.json()["id"] == "gemini-2.5-flash"


def test_model_list_also_at_root_and_new_models_appear_on_refresh(keyloom, fake, loop_thread):
    with keyloom.http() as h:
        assert h.get("/models", headers=keyloom.auth()).status_code == 200
    fake.models.append({"name": "models/gemini-9-ultra", "supportedGenerationMethods": ["generateContent"]})
    try:
        loop_thread.run(keyloom.kl.catalog.refresh())
        assert "gemini-9-ultra" in [m.id for m in keyloom.client().models.list().data]
    finally:
        fake.models.pop()


# -- completions -------------------------------------------------------------------------------

def test_completion_validates_and_carries_reasoning(keyloom, fake):
    raw = keyloom.client().chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=HELLO)
    body = json.loads(raw.http_response.text)
    validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"] == "Echo: hello there"
    assert body["choices"][0]["message"]["reasoning_content"] == "Thinking about the question."
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    [call] = fake.generate_calls()
    assert call.action == "generateContent" and call.key in KEYS
    assert "key" not in call.query  # the key travels in x-goog-api-key, never in the URL
    assert call.body["contents"] == [{"role": "user", "parts": [{"text": "hello there"}]}]


def test_completion_with_n_2(keyloom, fake):
    fake.script.append(Reply(body={"candidates": [
        {"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "B"}], "role": "model"}, "finishReason": "STOP", "index": 1}]}))
    r = keyloom.client().chat.completions.create(model="gemini-2.0-flash", messages=HELLO, n=2)
    assert [c.message.content for c in r.choices] == ["A", "B"]
    assert fake.generate_calls()[0].body["generationConfig"]["candidateCount"] == 2


def test_parameters_reach_gemini(keyloom, fake):
    keyloom.client().chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "system", "content": "Be terse."}, *HELLO], temperature=0.3,
        top_p=0.8, max_tokens=123, stop=["END"], seed=7, reasoning_effort="low",
        response_format={"type": "json_object"}, extra_body={"top_k": 20, "logit_bias": {}})
    body = fake.generate_calls()[0].body
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert body["generationConfig"] == {"temperature": 0.3, "topP": 0.8, "topK": 20, "maxOutputTokens": 123,
                                        "stopSequences": ["END"], "seed": 7, "responseMimeType": "application/json",
                                        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}}
    assert {s["threshold"] for s in body["safetySettings"]} == {"OFF"}


def test_model_list_refreshes_in_the_background(start_keyloom, fake):
    kl = start_keyloom(MODELS_REFRESH_INTERVAL="1")
    fake.models.append({"name": "models/gemini-new-release", "supportedGenerationMethods": ["generateContent"]})
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if "gemini-new-release" in [m.id for m in kl.client().models.list().data]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the new model never appeared")
    finally:
        fake.models.pop()


@pytest.mark.parametrize("fake_streaming", ["false", "true"])
def test_stream_chunks_validate(start_keyloom, fake, fake_streaming):
    kl = start_keyloom(FAKE_STREAMING=fake_streaming)
    fake.script.append(Reply(body=text_reply("one two three four five six seven eight nine")))
    with kl.http() as h, h.stream("POST", "/v1/chat/completions", headers=kl.auth(), json={
            "model": "gemini-2.5-flash", "messages": HELLO, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1] if line.startswith("data: ")]
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        "one two three four five six seven eight nine"
    text_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(text_chunks) == (3 if fake_streaming == "false" else 1)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    call = fake.generate_calls()[0]
    if fake_streaming == "false":
        assert call.action == "streamGenerateContent" and call.query["alt"] == "sse"
    else:
        assert call.action == "generateContent"


@pytest.mark.parametrize("fake_streaming", ["true", "false"])
def test_sdk_streams_whole_text(start_keyloom, fake, fake_streaming):
    kl = start_keyloom(FAKE_STREAMING=fake_streaming)
    stream = kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert text == "Echo: hello there" and reasoning == "Thinking about the question."
    assert chunks[-1].choices[0].finish_reason == "stop"
    expected = "generateContent" if fake_streaming == "true" else "streamGenerateContent"
    assert [c.action for c in fake.generate_calls()] == [expected]


WEATHER_TOOL = {"type": "function", "function": {
    "name": "getWeather", "description": "Weather for a place",
    "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                   "properties": {"location": {"type": "string"}}, "required": ["location"],
                   "additionalProperties": False}}}


@pytest.mark.parametrize("mode", ["plain", "fake-stream", "real-stream"])
def test_tool_calls_round_trip_with_thought_signature(start_keyloom, fake, mode):
    kl = start_keyloom(FAKE_STREAMING="false" if mode == "real-stream" else "true")
    client = kl.client()
    fake.script.append(Reply(body=function_call_reply("getWeather", {"location": "Tokyo"}, signature="SIG+/=")))
    if mode == "plain":
        raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=HELLO,
                                                               tools=[WEATHER_TOOL])
        validate("CreateChatCompletionResponse", json.loads(raw.http_response.text))
        r = raw.parse()
        assert r.choices[0].finish_reason == "tool_calls"
        call = r.choices[0].message.tool_calls[0]
        call_id, name, args = call.id, call.function.name, call.function.arguments
    else:
        chunks = list(client.chat.completions.create(model="gemini-2.5-flash", messages=HELLO, tools=[WEATHER_TOOL],
                                                     stream=True))
        deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert len(deltas) == 1 and deltas[0].index == 0
        call_id, name, args = deltas[0].id, deltas[0].function.name, deltas[0].function.arguments
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert name == "getWeather" and json.loads(args) == {"location": "Tokyo"}
    sent = fake.generate_calls()[0].body
    assert sent["tools"] == [{"functionDeclarations": [{
        "name": "getWeather", "description": "Weather for a place",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]}]

    client.chat.completions.create(model="gemini-2.5-flash", tools=[WEATHER_TOOL], messages=[
        *HELLO,
        {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                                              "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"}])
    follow = fake.generate_calls()[-1].body
    assert follow["contents"][1] == {"role": "model", "parts": [{
        "functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}}, "thoughtSignature": "SIG+/="}]}
    assert follow["contents"][2] == {"role": "user", "parts": [{
        "functionResponse": {"name": "getWeather", "response": {"content": "sunny, 21C"}}}]}


def test_trailing_slash_base_url_and_doubled_slashes(keyloom, fake):
    client = keyloom.client(base_url=keyloom.base_url + "/")
    assert client.chat.completions.create(model="gemini-2.0-flash", messages=HELLO).choices[0].message.content
    with keyloom.http() as h:
        for path in ("/v1//chat/completions", "//v1/chat/completions", "/chat/completions", "/v1/chat/completions/"):
            r = h.post(path, headers=keyloom.auth(), json={"model": "gemini-2.0-flash", "messages": HELLO})
            assert r.status_code == 200, path
        assert h.get("/v1//models", headers=keyloom.auth()).status_code == 200


def test_sillytavern_style_request(keyloom, fake):
    with keyloom.http() as h:
        r = h.post("/v1//chat/completions", headers=keyloom.auth(), json={
            "messages": [{"role": "system", "content": "Main."},
                         {"role": "system", "name": "example_user", "content": "Alex: hi"},
                         {"role": "assistant", "content": "Greeting."},
                         {"role": "user", "content": "one"}, {"role": "user", "content": "two"},
                         {"role": "assistant", "content": "Seraphina:"}],
            "model": "gemini-2.5-flash", "temperature": 1, "max_tokens": 300, "stream": False,
            "presence_penalty": 0, "frequency_penalty": 0, "top_p": 1, "logit_bias": {}})
    assert r.status_code == 200
    validate("CreateChatCompletionResponse", r.json())
    body = fake.generate_calls()[0].body
    assert body["systemInstruction"]["parts"] == [{"text": "Main."}, {"text": "example_user: Alex: hi"}]
    assert [c["role"] for c in body["contents"]] == ["model", "user", "model"]
    assert body["contents"][1]["parts"] == [{"text": "one"}, {"text": "two"}]


# -- auth --------------------------------------------------------------------------------------

def test_auth_ways_and_401_shape(keyloom, fake):
    req = {"model": "gemini-2.0-flash", "messages": HELLO}
    with keyloom.http() as h:
        assert h.post("/v1/chat/completions", json=req, headers={"x-goog-api-key": PASSWORD}).status_code == 200
        assert h.post(f"/v1/chat/completions?key={PASSWORD}", json=req).status_code == 200
        assert h.post("/v1/chat/completions", json=req, headers={"Authorization": f"bearer {PASSWORD}"}).status_code \
            == 200
        for headers in ({}, {"Authorization": "Bearer undefined"}, {"Authorization": "Bearer"},
                        {"Authorization": f"Basic {PASSWORD}"}, {"x-goog-api-key": PASSWORD + "x"},
                        {"Authorization": "Bearer 密码".encode()}):
            r = h.post("/v1/chat/completions", json=req, headers=headers)
            assert r.status_code == 401, headers
            validate("ErrorResponse", r.json())
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert PASSWORD not in r.text
        assert h.get("/v1/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        keyloom.client(api_key="wrong").models.list()
    assert len(fake.generate_calls()) == 3


def test_health_needs_no_auth_and_shows_no_secrets(keyloom):
    with keyloom.http() as h:
        r = h.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["keys"] == {"total": 3, "active": 3, "disabled": 0}
    assert body["models"] == 6
    for secret in [PASSWORD, *KEYS, *(k[-4:] for k in KEYS)]:
        assert secret not in r.text
    assert "gemini" not in r.text


def test_index_page_has_no_data(keyloom):
    with keyloom.http() as h:
        r = h.get("/")
    assert r.status_code == 200 and "Keyloom" in r.text and "text/html" in r.headers["content-type"]
    assert PASSWORD not in r.text and all(k not in r.text for k in KEYS)


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, needle", [
    (b"not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b"[1,2]", 400, "JSON object"),
    (b"\xff\xfe{}", 400, "UTF-8"),
    (b'{"messages": []}', 400, "model"),
    (b'{"model": "gemini-2.0-flash", "messages": []}', 400, "messages"),
    (b'{"model": "gemini-2.0-flash"}', 400, "messages"),
    (b'{"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "stream"),
    (b'{"model": "../../etc", "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    (b'{"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 400,
     "temperature"),
    (b"[" * 100000 + b"]" * 100000, 400, "JSON"),
    (json.dumps({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}] * 10000}).encode(),
     400, "MAX_MESSAGES"),
    (b'{"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "lone \\ud800 surrogate"}]}', 400,
     "Unicode"),
    (b'{"model": "gemini-0.1-unheard-of", "messages": [{"role": "user", "content": "x"}]}', 404, "does not exist"),
    (b'{"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": [{"type": "video"}]}]}', 400, "type"),
    (b'{"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}], "tools": "all"}', 400,
     "tools"),
    (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
])
def test_bad_requests_get_clear_4xx_and_never_reach_gemini(keyloom, fake, body, status, needle):
    with keyloom.http() as h:
        r = h.post("/v1/chat/completions", content=body,
                   headers={**keyloom.auth(), "Content-Type": "application/json"})
    assert r.status_code == status
    validate("ErrorResponse", r.json())
    assert needle in r.json()["error"]["message"]
    assert fake.generate_calls() == []
    usage = keyloom.kl.pool.usage
    assert all(u.requests == 0 and u.failures == 0 for u in usage.rows.values())  # nothing against any key
    assert keyloom.kl.client_limits.per_ip == {}  # nor against the client's own limits


def test_body_over_the_limit_is_413_before_it_is_read(start_keyloom, fake):
    kl = start_keyloom(MAX_REQUEST_BODY_MB="0.01")
    with kl.http() as h:
        r = h.post("/v1/chat/completions", headers=kl.auth(),
                   content=json.dumps({"model": "gemini-2.0-flash", "messages": [{"role": "user",
                                                                               "content": "x" * 20000}]}))
        assert r.status_code == 413
        validate("ErrorResponse", r.json())
        assert "limit" in r.json()["error"]["message"]
        ok = h.post("/v1/chat/completions", headers=kl.auth(),
                    json={"model": "gemini-2.0-flash", "messages": HELLO})
        assert ok.status_code == 200  # the server is fine afterwards
    assert len(fake.generate_calls()) == 1


def test_unknown_paths_and_methods_answer_in_openai_shape(keyloom):
    with keyloom.http() as h:
        r = h.get("/v1/nothing-here")
        assert r.status_code == 404
        validate("ErrorResponse", r.json())
        r = h.get("/v1/chat/completions", headers=keyloom.auth())
        assert r.status_code == 405
        validate("ErrorResponse", r.json())


def test_cors_preflight_and_headers(keyloom):
    with keyloom.http() as h:
        r = h.options("/v1/chat/completions", headers={"Origin": "https://chat.example",
                                                       "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization,content-type"})
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        assert "POST" in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-allow-headers"] == "authorization,content-type"
        r = h.get("/v1/models", headers={**keyloom.auth(), "Origin": "https://chat.example"})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "server" not in r.headers


def test_cors_restricted_origins(start_keyloom):
    kl = start_keyloom(ALLOWED_ORIGINS="https://good.example")
    with kl.http() as h:
        good = h.get("/v1/models", headers={**kl.auth(), "Origin": "https://good.example"})
        bad = h.get("/v1/models", headers={**kl.auth(), "Origin": "https://evil.example"})
    assert good.headers["access-control-allow-origin"] == "https://good.example"
    assert "access-control-allow-origin" not in bad.headers
