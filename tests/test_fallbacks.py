"""Fallback chains (MODEL_FALLBACKS): when every key is out of quota or resting for a model, the next model of
its chain serves, translated for that model; the answer and the request log say which model served; nothing
else falls back, and a client key's model list still holds."""
from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import KEYS, PASSWORD
from tests.fake_gemini import Reply
from tests.support.wait import wait_until

CHAIN = "gemini-3-pro-preview > gemini-2.5-pro > gemini-2.5-flash"
HELLO = [{"role": "user", "content": "hello"}]


def out_of_quota(fake, model: str, per: str = "quota_day") -> None:
    for k in KEYS:
        fake.key_model[(k, model)] = per


@pytest.mark.parametrize("stream", [False, True])
def test_every_key_out_for_a_model_means_the_next_of_its_chain_serves(start_keyloom, fake, loop_thread, stream):
    out_of_quota(fake, "gemini-3-pro-preview")
    kl = start_keyloom(MODEL_FALLBACKS=CHAIN, FAKE_STREAMING="false")
    client = kl.client()
    if stream:
        chunks = list(client.chat.completions.create(model="gemini-3-pro-preview", messages=HELLO,
                                                     reasoning_effort="high", stream=True))
        assert {c.model for c in chunks} == {"gemini-2.5-pro"}
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello"
    else:
        r = client.chat.completions.create(model="gemini-3-pro-preview", messages=HELLO, reasoning_effort="high")
        assert r.model == "gemini-2.5-pro" and r.choices[0].message.content == "Echo: hello"
    calls = fake.generate_calls()
    assert [c.model for c in calls[-1:]] == ["gemini-2.5-pro"]
    first = [c for c in calls if c.model == "gemini-3-pro-preview"]
    assert first and all(c.body["generationConfig"]["thinkingConfig"].get("thinkingLevel") for c in first)
    # translated again for the model that serves: a 2.5 model takes a budget, not a level
    assert calls[-1].body["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 24576


    async def logged() -> list[tuple]:
        await kl.kl.flusher.flush()
        return await kl.kl.db.fetchall("SELECT model, status FROM request_log")
    # the row is written when the request has finished on the server, which may be just after the client read
    # the stream's end
    rows = wait_until(lambda: loop_thread.run(logged()), "the request's row in the log")
    assert rows == [("gemini-3-pro-preview → gemini-2.5-pro", 200)]


def test_a_chain_goes_as_far_as_it_must(start_keyloom, fake):
    out_of_quota(fake, "gemini-3-pro-preview")
    out_of_quota(fake, "gemini-2.5-pro", "quota_minute")
    kl = start_keyloom(MODEL_FALLBACKS=CHAIN)
    r = kl.client().chat.completions.create(model="gemini-3-pro-preview", messages=HELLO)
    assert r.model == "gemini-2.5-flash"


def test_the_responses_and_messages_apis_say_which_model_served(start_keyloom, fake):
    out_of_quota(fake, "gemini-2.5-pro")
    kl = start_keyloom(MODEL_FALLBACKS=CHAIN, FAKE_STREAMING="false")
    with kl.client().responses.stream(model="gemini-2.5-pro", input="hi", store=False) as s:
        assert s.get_final_response().model == "gemini-2.5-flash"
    with kl.http() as h:
        r = h.post("/v1/messages", headers={"x-api-key": PASSWORD},
                   json={"model": "gemini-2.5-pro", "max_tokens": 50, "messages": HELLO})
    assert r.json()["model"] == "gemini-2.5-flash"


def test_without_a_chain_or_for_other_failures_nothing_falls_back(start_keyloom, fake):
    out_of_quota(fake, "gemini-2.5-pro")
    kl = start_keyloom()
    with pytest.raises(openai.RateLimitError):
        kl.client().chat.completions.create(model="gemini-2.5-pro", messages=HELLO)
    assert {c.model for c in fake.generate_calls()} == {"gemini-2.5-pro"}

    fake.key_model.clear()
    fake.requests.clear()
    kl2 = start_keyloom(MODEL_FALLBACKS=CHAIN)
    fake.script.append(Reply(
        status=400, body={"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad request"}}))
    with pytest.raises(openai.BadRequestError):
        kl2.client().chat.completions.create(model="gemini-2.5-pro", messages=HELLO)
    assert [c.model for c in fake.generate_calls()] == ["gemini-2.5-pro"]


def test_a_client_keys_model_list_holds_for_fallbacks_too(start_keyloom, fake):
    out_of_quota(fake, "gemini-2.5-pro")
    friend = "kl-friend-for-fallbacks-0123456789abcdef"
    kl = start_keyloom(MODEL_FALLBACKS=CHAIN, CLIENT_KEYS=json.dumps([{"name": "pro-only", "key": friend,
                                                                        "models": ["gemini-2.5-pro"]}]))
    with pytest.raises(openai.RateLimitError):
        kl.client(api_key=friend).chat.completions.create(model="gemini-2.5-pro", messages=HELLO)
    assert {c.model for c in fake.generate_calls()} == {"gemini-2.5-pro"}
