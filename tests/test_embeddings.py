"""POST /v1/embeddings with the official SDK: strings, long lists split into Gemini batches in order,
float and base64 encodings, model mapping, errors; responses validate against the OpenAI spec."""
from __future__ import annotations

import base64
import struct

import openai
import pytest

from server.translate import embeddings as emb
from tests.fake_gemini import EMBED_DIMS, fake_vector
from tests.support.openai_schema import validate


def close(a, b):
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


def test_one_string_float(keyloom, fake):
    r = keyloom.client().embeddings.create(model="gemini-embedding-001", input="hello world", encoding_format="float")
    raw = r.model_dump()
    validate("CreateEmbeddingResponse", raw)
    assert raw["model"] == "gemini-embedding-001" and len(raw["data"]) == 1
    assert close(raw["data"][0]["embedding"], fake_vector("hello world", EMBED_DIMS))
    assert raw["usage"]["prompt_tokens"] == raw["usage"]["total_tokens"] >= 1
    [call] = [c for c in fake.requests if c.action == "batchEmbedContents"]
    assert call.body == {"requests": [{"model": "models/gemini-embedding-001",
                                        "content": {"parts": [{"text": "hello world"}]}}]}


def test_250_strings_become_three_batches_in_order_with_the_sdk_default_base64(keyloom, fake):
    texts = [f"text number {i}" for i in range(250)]
    r = keyloom.client().embeddings.create(model="gemini-embedding-001", input=texts, dimensions=16)
    assert [d.index for d in r.data] == list(range(250))
    for text, d in zip(texts, r.data, strict=True):
        assert close(d.embedding, fake_vector(text, 16))  # the SDK decoded our base64
    calls = [c for c in fake.requests if c.action == "batchEmbedContents"]
    assert sorted(len(c.body["requests"]) for c in calls) == [50, 100, 100]
    sent = [req["content"]["parts"][0]["text"] for c in calls for req in c.body["requests"]]
    assert sorted(sent) == sorted(texts)
    assert all(req["outputDimensionality"] == 16 for c in calls for req in c.body["requests"])
    assert len({c.key for c in calls}) >= 2  # batches spread over the pool


def test_base64_is_little_endian_float32(keyloom):
    with keyloom.http() as http:
        r = http.post("/v1/embeddings", headers=keyloom.auth(),
                      json={"model": "gemini-embedding-001", "input": ["a", "b"], "encoding_format": "base64"})
    body = r.json()
    validate("CreateEmbeddingResponse", {**body, "data": [{**d, "embedding": [0.0]} for d in body["data"]]})
    for text, d in zip(["a", "b"], body["data"], strict=True):
        raw = base64.b64decode(d["embedding"])
        assert close(list(struct.unpack(f"<{len(raw) // 4}f", raw)), fake_vector(text, EMBED_DIMS))


def test_openai_model_names_are_mapped(keyloom, fake):
    r = keyloom.client().embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert r.model == "text-embedding-3-small"
    assert [c.model for c in fake.requests if c.action == "batchEmbedContents"] == ["gemini-embedding-001"]


@pytest.mark.parametrize("body,param", [
    ({"model": "gemini-embedding-001", "input": [1, 2, 3]}, "input"),
    ({"model": "gemini-embedding-001", "input": [[1, 2], [3]]}, "input"),
    ({"model": "gemini-embedding-001", "input": ""}, "input"),
    ({"model": "gemini-embedding-001", "input": []}, "input"),
    ({"model": "gemini-embedding-001", "input": ["ok", ""]}, "input"),
    ({"model": "gemini-embedding-001", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "gemini-embedding-001", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x"}, "model"),
])
def test_bad_requests_get_a_clear_400(keyloom, fake, body, param):
    with keyloom.http() as http:
        r = http.post("/v1/embeddings", headers=keyloom.auth(), json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert "token arrays" in r.json()["error"]["message"] or body.get("input") != [1, 2, 3]
    assert not [c for c in fake.requests if c.action == "batchEmbedContents"]


def test_unknown_or_chat_model_is_404_and_too_many_inputs_400(keyloom):
    c = keyloom.client()
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="no-such-embedder", input="x")
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="gemini-2.5-flash", input="x")  # a chat model is not an embedding model
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="gemini-embedding-001", input=["x"] * 2049)


def test_quota_errors_rotate_keys_and_count(keyloom, fake):
    pool = keyloom.kl.pool
    good = pool.keys[2]
    for k in pool.keys[:2]:
        fake.keys[k.secret] = "quota_minute"
    for _ in range(3):
        r = keyloom.client().embeddings.create(model="gemini-embedding-001", input="x", encoding_format="float")
        assert len(r.data) == 1
    calls = [c for c in fake.requests if c.action == "batchEmbedContents"]
    assert [c.key for c in calls].count(good.secret) == 3
    for k in pool.keys[:2]:  # least used first: each refusing key is asked once, then cools down
        assert [c.key for c in calls].count(k.secret) == 1
        assert k.models["gemini-embedding-001"].cooldown_until > 0
    assert sum(pool.usage.requests(k.fp, "gemini-embedding-001") for k in pool.keys) == len(calls)
    assert pool.usage.get(good.fp, "gemini-embedding-001").successes == 3


def test_models_list_embedding_models_only_when_asked(keyloom):
    with keyloom.http() as http:
        chat = [m["id"] for m in http.get("/v1/models", headers=keyloom.auth()).json()["data"]]
        only = [m["id"] for m in http.get("/v1/models?type=embedding", headers=keyloom.auth()).json()["data"]]
        both = [m["id"] for m in http.get("/v1/models?type=all", headers=keyloom.auth()).json()["data"]]
        assert http.get("/v1/models?type=nope", headers=keyloom.auth()).status_code == 400
        assert http.get("/v1/models/gemini-embedding-001", headers=keyloom.auth()).status_code == 200
    assert "gemini-embedding-001" not in chat and "gemini-2.5-flash" in chat
    assert only == ["gemini-embedding-001", "text-embedding-004"]
    assert set(both) == set(chat) | set(only)


def test_pure_parts():
    plan = emb.parse({"model": "m", "input": ["a"] * 201, "dimensions": 4}, {})
    assert [len(b["requests"]) for b in emb.batches(plan)] == [100, 100, 1]
    assert emb.estimate_tokens("abcdefgh") == 2 and emb.estimate_tokens("你好") == 2
    assert base64.b64decode(emb.encode_base64([1.0, -2.5])) == struct.pack("<2f", 1.0, -2.5)
    with pytest.raises(ValueError):
        emb.vectors({"embeddings": [{"values": [1]}]}, 2)
    assert emb.parse({"model": "x", "input": "y"}, {"x": "models/z"}).model == "z"
