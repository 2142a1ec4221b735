"""OpenAI-compatible upstreams behind Keyloom: answers pass through unchanged, streams chunk by chunk,
keys rotate and cool down on 429, a keyless local server works, embeddings and model lists route."""
from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.fake_openai import FakeOpenAI, answer

HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def upstream_server(loop_thread):
    fake = FakeOpenAI()
    loop_thread.run(fake.start())
    yield fake
    loop_thread.run(fake.stop())


@pytest.fixture
def upstream(upstream_server):
    upstream_server.reset()
    upstream_server.keys.update({"sk-one-aaaaaaaa": "ok", "sk-two-bbbbbbbb": "ok"})
    return upstream_server


def providers(url, **extra):
    cfg = {"name": "remote", "base_url": url, "keys": ["sk-one-aaaaaaaa", "sk-two-bbbbbbbb"],
           "models": ["llama3.1:8b", "qwen2.5"], **extra}
    return json.dumps({"openai": [cfg]})


def test_answers_pass_through_unchanged(start_keyloom, upstream):
    running = start_keyloom(PROVIDERS=providers(upstream.base_url))
    with running.http() as http:
        r = http.post("/v1/chat/completions", headers=running.auth(),
                      json={"model": "llama3.1:8b", "messages": HI, "temperature": 0.2, "seed": 7})
    assert r.status_code == 200
    assert r.json() == answer("llama3.1:8b", "llama3.1:8b says: hello there")
    [seen] = upstream.requests
    assert seen.body == {"model": "llama3.1:8b", "messages": HI, "temperature": 0.2, "seed": 7}
    assert seen.key in ("sk-one-aaaaaaaa", "sk-two-bbbbbbbb")
    out = running.client().chat.completions.create(model="qwen2.5", messages=HI)
    assert out.choices[0].message.content == "qwen2.5 says: hello there"
    running.loop.run(running.kl.flusher.flush())  # the periodic flush may have taken the rows already
    [(status, prompt, fp)] = running.loop.run(running.kl.db.fetchall(
        "SELECT status, prompt_tokens, key_fp FROM request_log WHERE model = 'qwen2.5'"))
    assert status == 200 and prompt == 7 and fp


@pytest.mark.parametrize("fake_streaming", ["true", "false"])
def test_streams_chunk_by_chunk(start_keyloom, upstream, fake_streaming):
    running = start_keyloom(PROVIDERS=providers(upstream.base_url), FAKE_STREAMING=fake_streaming,
                            FAKE_STREAMING_INTERVAL="0.2")
    upstream.delay = 0.3
    t0 = time.monotonic()
    arrivals = []
    for chunk in running.client().chat.completions.create(model="llama3.1:8b", messages=HI, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic() - t0, chunk.choices[0].delta.content))
    assert "".join(a[1] for a in arrivals) == "llama3.1:8b says: hello there"
    assert len(arrivals) == 4
    total = arrivals[-1][0]
    assert arrivals[0][0] < total - 0.5  # the first chunk came long before the upstream finished


def test_fake_streaming_sends_keepalives_before_the_first_byte(start_keyloom, upstream):
    running = start_keyloom(PROVIDERS=providers(upstream.base_url), FAKE_STREAMING="true",
                            FAKE_STREAMING_INTERVAL="0.2")
    upstream.first_delay = 0.7  # the upstream thinks before it answers at all
    with httpx.Client(base_url=running.url, timeout=20) as http:
        with http.stream("POST", "/v1/chat/completions", headers=running.auth(),
                         json={"model": "qwen2.5", "messages": HI, "stream": True}) as r:
            pieces = [(time.monotonic(), p) for p in r.iter_raw()]
    raw = b"".join(p for _, p in pieces)
    before_data = raw.split(b"data: ")[0]
    assert raw.startswith(b": keep-alive") and before_data.count(b": keep-alive") >= 3
    events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]" and len(events) == 6  # the upstream's events, untouched
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_keys_rotate_and_cool_down_on_429(start_keyloom, upstream):
    running = start_keyloom(PROVIDERS=providers(upstream.base_url))
    upstream.keys["sk-one-aaaaaaaa"] = "quota"
    for _ in range(4):
        running.client().chat.completions.create(model="llama3.1:8b", messages=HI)
    used = [s.key for s in upstream.requests]
    # the first pick (both unused: the first key) hits the 429; after it the key rests, the other serves all
    assert used == ["sk-one-aaaaaaaa"] + ["sk-two-bbbbbbbb"] * 4
    key = next(k for k in running.kl.pool.keys if k.secret == "sk-one-aaaaaaaa")
    assert key.models["llama3.1:8b"].cooldown_until - running.kl.clock.time() > 25  # Retry-After: 30
    upstream.keys["sk-two-bbbbbbbb"] = "invalid"
    with pytest.raises(openai.APIStatusError) as e:
        running.client().chat.completions.create(model="llama3.1:8b", messages=HI)
    assert e.value.status_code in (429, 503)
    two = next(k for k in running.kl.pool.keys if k.secret == "sk-two-bbbbbbbb")
    assert two.disabled_reason and "remote" in two.disabled_reason and "sk-two" not in two.disabled_reason


def test_upstream_client_errors_come_back_unchanged_and_are_not_retried(start_keyloom, upstream):
    running = start_keyloom(PROVIDERS=providers(upstream.base_url, models=["llama3.1:8b", "ghost"]))
    with pytest.raises(openai.NotFoundError) as e:
        running.client().chat.completions.create(model="ghost", messages=HI)
    assert "ghost" in str(e.value)
    assert len(upstream.requests) == 1


def test_a_keyless_local_upstream(start_keyloom, upstream):
    upstream.keyless = True
    running = start_keyloom(PROVIDERS=providers(upstream.base_url, keys=[], prefix="ollama/"))
    out = running.client().chat.completions.create(model="ollama/llama3.1:8b", messages=HI)
    assert out.choices[0].message.content == "llama3.1:8b says: hello there"
    assert upstream.requests[-1].key is None and upstream.requests[-1].body["model"] == "llama3.1:8b"
    ids = [m.id for m in running.client().models.list()]
    assert "ollama/llama3.1:8b" in ids and "llama3.1:8b" not in ids
    [key] = [k for k in running.kl.pool.keys if k.provider == "remote"]
    assert key.masked == "(no key)"


def test_models_auto_and_embeddings(start_keyloom, upstream):
    running = start_keyloom(PROVIDERS=providers(upstream.base_url, models="auto"))
    running.loop.run(running.kl.router.refresh())
    ids = [m.id for m in running.client().models.list()]
    assert {"llama3.1:8b", "qwen2.5"} <= set(ids)
    owned = {m.id: m.owned_by for m in running.client().models.list()}
    assert owned["qwen2.5"] == "remote" and owned["gemini-2.5-flash"] == "google"
    emb = running.client().embeddings.create(model="qwen2.5", input=["ab", "abcd"], encoding_format="float")
    assert [d.embedding for d in emb.data] == [[2.0, 0.5], [4.0, 0.5]]
    assert upstream.requests[-1].path == "/v1/embeddings" and upstream.requests[-1].body["model"] == "qwen2.5"
