"""The Gemini API through the pool, driven by Google's own `google-genai` SDK: generate, stream,
count tokens, embed. The fake sees pooled keys and the client's bodies unchanged."""
from __future__ import annotations

import pytest
import ujson
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.conftest import KEYS, PASSWORD
from tests.fake_gemini import EMBED_DIMS, fake_vector


@pytest.fixture(params=["v1", "v1beta"])
def client(keyloom, request):
    """google-genai as shipped (API version v1 for the Gemini API) and pinned to v1beta."""
    options = types.HttpOptions(base_url=keyloom.url, timeout=20_000,
                                api_version=None if request.param == "v1" else "v1beta")
    return genai.Client(api_key=PASSWORD, http_options=options)


def calls(fake, action):
    return [r for r in fake.requests if r.action == action]


def test_generate_passes_the_body_through_with_a_pooled_key(client, keyloom, fake):
    config = types.GenerateContentConfig(
        system_instruction="be brief", temperature=0.3,
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
            name="get_weather", description="w",
            parameters={"type": "OBJECT", "properties": {"c": {"type": "STRING"}}})])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE")))
    r = client.models.generate_content(model="gemini-2.5-flash", contents="Say hi", config=config)
    assert r.text
    [call] = calls(fake, "generateContent")
    assert call.key in KEYS and call.key != PASSWORD
    sent = ujson.loads(call.raw)
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}
    assert sent["systemInstruction"]["parts"][0]["text"] == "be brief"
    assert sent["generationConfig"] == {"temperature": 0.3}
    assert "safetySettings" not in sent  # nothing added either


def test_body_bytes_are_forwarded_unchanged(keyloom, fake):
    raw = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "unknownField": {"x": 1}}'
    with keyloom.http() as http:
        r = http.post("/v1beta/models/gemini-2.5-flash:generateContent", content=raw,
                      headers={"x-goog-api-key": PASSWORD, "Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["candidates"]
        r2 = http.post(f"/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={PASSWORD}", content=raw,
                       headers={"Content-Type": "application/json"})
        assert r2.status_code == 200
    assert [c.raw for c in calls(fake, "generateContent")] == [raw, raw]
    assert all("key" not in c.query for c in calls(fake, "generateContent"))  # the key travels in a header


def test_stream_with_and_without_alt_sse(client, keyloom, fake):
    pieces = [c.text for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="Count")]
    assert len(pieces) >= 2 and "".join(pieces)
    [call] = calls(fake, "streamGenerateContent")
    assert call.query.get("alt") == "sse"
    with keyloom.http() as http:
        r = http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                      headers={"x-goog-api-key": PASSWORD},
                      json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    events = r.json()  # alt=json: one JSON array
    assert r.status_code == 200 and isinstance(events, list) and len(events) >= 2
    assert all("candidates" in e for e in events)


def test_count_tokens_is_not_counted_against_the_daily_limit(client, keyloom, fake):
    r = client.models.count_tokens(model="gemini-2.5-flash", contents="one two three")
    assert r.total_tokens == 3
    assert len(calls(fake, "countTokens")) == 1
    pool = keyloom.kl.pool
    assert sum(pool.usage.requests(k.fp, "gemini-2.5-flash") for k in pool.keys) == 0


def test_embed_through_the_pool(client, keyloom, fake):
    r = client.models.embed_content(model="gemini-embedding-001", contents=["alpha", "beta"])
    assert [e.values for e in r.embeddings] == [fake_vector("alpha", EMBED_DIMS), fake_vector("beta", EMBED_DIMS)]
    sent = calls(fake, "batchEmbedContents") + calls(fake, "embedContent")
    assert sent and all(c.key in KEYS for c in sent)
    pool = keyloom.kl.pool
    assert sum(pool.usage.requests(k.fp, "gemini-embedding-001") for k in pool.keys) == len(sent)


def test_model_list_in_gemini_shape(client, keyloom):
    names = [m.name for m in client.models.list()]
    assert "models/gemini-2.5-flash" in names and "models/gemini-embedding-001" in names
    m = client.models.get(model="gemini-2.5-flash")
    assert m.name == "models/gemini-2.5-flash"
    with keyloom.http() as http:
        openai_shape = http.get("/v1/models", headers=keyloom.auth()).json()
        assert openai_shape["object"] == "list"  # OpenAI clients at the same path are told apart
        r = http.get("/v1/models/nope", headers={"x-goog-api-key": PASSWORD, "x-goog-api-client": "genai"})
        assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
        page = http.get("/v1beta/models?pageSize=2", headers={"x-goog-api-key": PASSWORD}).json()
        assert len(page["models"]) == 2 and page["nextPageToken"] == "2"
        r = http.get("/v1beta/models/no-such-model", headers={"x-goog-api-key": PASSWORD})
        assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


def test_errors_keep_geminis_shape_and_keys_rotate(client, keyloom, fake):
    wrong = genai.Client(api_key="wrong", http_options=types.HttpOptions(base_url=keyloom.url))
    with pytest.raises(genai_errors.ClientError) as e:
        wrong.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(model="no-such-model", contents="x")
    assert e.value.code == 404
    fake.keys[KEYS[0]] = "quota_minute"
    fake.keys[KEYS[1]] = "invalid"
    for _ in range(3):
        assert client.models.generate_content(model="gemini-2.5-flash", contents="x").text
    keys_used = [c.key for c in calls(fake, "generateContent")]
    assert keys_used.count(KEYS[2]) == 3
    for k in KEYS[:2]:
        fake.keys[k] = "quota_minute"
    fake.keys[KEYS[2]] = "quota_minute"
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"
    with keyloom.http() as http:
        r = http.post("/v1beta/models/gemini-2.5-flash:notAMethod", headers={"x-goog-api-key": PASSWORD}, json={})
        assert r.status_code == 404 and set(r.json()["error"]) == {"code", "message", "status"}
        r = http.post("/v1beta/models/gemini-2.5-flash:generateContent", headers={"x-goog-api-key": PASSWORD},
                      content=b"[1, 2]")
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_request_log_rows_for_native_calls(client, keyloom):
    client.models.generate_content(model="gemini-2.5-flash", contents="x")
    keyloom.loop.run(keyloom.kl.flusher.flush())  # the periodic flush may have taken the rows already
    rows = keyloom.loop.run(keyloom.kl.db.fetchall("SELECT model, status FROM request_log"))
    assert rows == [("gemini-2.5-flash", 200)]
