"""Thought signatures and key rotation: Gemini 3 accepts a function call's thought signature back only from the
account that issued it, and a pool rotates keys per request. Keyloom seals each signature it hands out with
the fingerprint of the key that answered, sends the next turn to that key when it can, and otherwise (or when
Gemini refuses a signature anyway) sends the turn again with Google's placeholder instead of failing it.

The fake binds signatures to keys like Gemini does (`FakeGemini.bind_signatures`): a signature issued to one
key and sent back with another is answered with 400 "Corrupted thought signature."."""
from __future__ import annotations

import json

import pytest

from server.pool.keys import fingerprint
from server.signatures import seal, unseal, unseal_body, with_placeholder_signatures
from server.translate.gemini_body import DUMMY_SIGNATURE
from server.translate.openai_to_gemini import make_tool_call_id
from tests.conftest import KEYS
from tests.fake_gemini import Reply, function_call_reply, key_signature, text_reply

HELLO = [{"role": "user", "content": "weather in Tokyo?"}]
WEATHER = {"type": "function", "function": {"name": "getWeather", "description": "Weather for a place",
                                            "parameters": {"type": "object",
                                                           "properties": {"location": {"type": "string"}}}}}
MODEL = "gemini-3-pro-preview"


# -- the pure pieces -----------------------------------------------------------------------------------

def test_seal_and_unseal():
    fp = "0123456789ab"
    assert unseal(seal("c2lnbmF0dXJl", fp)) == ("c2lnbmF0dXJl", fp)
    assert seal("c2lnbmF0dXJl", None) == "c2lnbmF0dXJl"
    # a plain signature (from another proxy, or from before sealing) has no issuer and passes unchanged
    assert unseal("c2lnbmF0dXJl") == ("c2lnbmF0dXJl", None)
    assert unseal("ABCDEFGHIJKL.rest") == ("ABCDEFGHIJKL.rest", None)  # not a fingerprint: not hex
    assert unseal(DUMMY_SIGNATURE) == (DUMMY_SIGNATURE, None)


def test_unseal_body_names_the_latest_issuer_and_leaves_plain_signatures():
    body = {"contents": [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}},
                                     "thoughtSignature": seal("b2xk", "aaaaaaaaaaaa")}]},
        {"role": "model", "parts": [{"functionCall": {"name": "b", "args": {}},
                                     "thoughtSignature": seal("bmV3", "bbbbbbbbbbbb")},
                                    {"text": "x", "thoughtSignature": "cGxhaW4="}]}]}
    assert unseal_body(body) == "bbbbbbbbbbbb"
    sigs = [p.get("thoughtSignature") for c in body["contents"] for p in c["parts"]]
    assert sigs == [None, "b2xk", "bmV3", "cGxhaW4="]
    assert unseal_body({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}) is None
    assert unseal_body({"contents": "not a list of contents"}) is None


def test_placeholder_body_keeps_function_calls_and_drops_other_signatures():
    body = {"contents": [{"role": "model", "parts": [
        {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "b2xk"},
        {"text": "said", "thoughtSignature": "dGV4dA=="}]}], "tools": [{"functionDeclarations": []}]}
    out = json.loads(with_placeholder_signatures(json.dumps(body).encode()))
    assert out["contents"][0]["parts"] == [
        {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": DUMMY_SIGNATURE}, {"text": "said"}]
    assert out["tools"] == body["tools"]


# -- through Keyloom -----------------------------------------------------------------------------------

def _first_turn(kl, fake, mode):
    """A tool call from Gemini; → (the client's call id, the key that answered)."""
    fake.script.append(Reply(body=function_call_reply("getWeather", {"location": "Tokyo"})))
    client = kl.client()
    if mode == "plain":
        call = client.chat.completions.create(model=MODEL, messages=HELLO, tools=[WEATHER]).choices[0] \
            .message.tool_calls[0]
        call_id, args = call.id, call.function.arguments
    else:
        chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, tools=[WEATHER], stream=True))
        delta = next(tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or []))
        call_id, args = delta.id, delta.function.arguments
    issuer = fake.generate_calls()[-1].key
    assert issuer in KEYS
    assert call_id.endswith(seal(key_signature(issuer), fingerprint(issuer)))  # sealed with the issuer
    assert not any(k in call_id or k.lower() in call_id.lower() for k in KEYS)  # a fingerprint, never a key
    return call_id, args, issuer


def _second_turn(kl, mode, call_id, args):
    messages = [*HELLO,
                {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                                                      "function": {"name": "getWeather", "arguments": args}}]},
                {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"}]
    client = kl.client()
    if mode == "plain":
        return client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER]) \
            .choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], stream=True))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _sent_signature(call):
    return call.body["contents"][1]["parts"][0].get("thoughtSignature")


@pytest.mark.parametrize("mode", ["plain", "fake-stream", "real-stream"])
def test_the_next_turn_goes_to_the_key_that_issued_the_signature(start_keyloom, fake, mode):
    fake.bind_signatures = True
    kl = start_keyloom(FAKE_STREAMING="false" if mode == "real-stream" else "true")
    call_id, args, issuer = _first_turn(kl, fake, mode)
    # rotation alone would move on: the least-used key is another one now
    kl.client().chat.completions.create(model=MODEL, messages=HELLO)
    assert fake.generate_calls()[-1].key != issuer
    fake.script.append(Reply(body=text_reply("It is sunny in Tokyo.")))
    assert _second_turn(kl, mode, call_id, args) == "It is sunny in Tokyo."
    follow = fake.generate_calls()[-1]
    assert follow.key == issuer and _sent_signature(follow) == key_signature(issuer)
    assert len(fake.generate_calls()) == 3  # no refused attempt on the way


@pytest.mark.parametrize("mode", ["plain", "real-stream"])
def test_when_the_issuer_cannot_answer_the_turn_goes_with_the_placeholder(start_keyloom, fake, mode):
    fake.bind_signatures = True
    kl = start_keyloom(FAKE_STREAMING="false" if mode == "real-stream" else "true")
    call_id, args, issuer = _first_turn(kl, fake, mode)
    fake.keys[issuer] = "quota_day"  # the issuer is over its daily quota now
    fake.requests.clear()
    fake.script.append(Reply(body=text_reply("It is sunny in Tokyo.")))
    assert _second_turn(kl, mode, call_id, args) == "It is sunny in Tokyo."
    calls = fake.generate_calls()
    # the issuer first (429), then another key refuses the foreign signature, then the placeholder is taken
    assert [c.key == issuer for c in calls] == [True, False, False]
    assert _sent_signature(calls[0]) == _sent_signature(calls[1]) == key_signature(issuer)
    assert _sent_signature(calls[2]) == DUMMY_SIGNATURE
    assert calls[1].key != issuer and calls[2].key != issuer


def test_a_signature_from_elsewhere_is_sent_as_is_then_replaced_once_refused(start_keyloom, fake):
    """A history from another proxy (an unsealed signature Gemini refuses): one refused attempt, then the
    placeholder; the client gets its answer, not the 400."""
    fake.bind_signatures = True
    kl = start_keyloom()
    foreign = key_signature("some other account's key")
    call_id = make_tool_call_id("call_1", foreign)
    fake.script.append(Reply(body=text_reply("fine")))
    assert _second_turn(kl, "plain", call_id, json.dumps({"location": "Tokyo"})) == "fine"
    calls = fake.generate_calls()
    assert [_sent_signature(c) for c in calls] == [foreign, DUMMY_SIGNATURE]
    assert calls[0].key != calls[1].key  # the attempt after a refusal is an attempt like any other


@pytest.mark.parametrize("stream", [False, True])
def test_a_three_turn_tool_loop_over_three_keys_through_chat_completions(start_keyloom, fake, stream):
    """The same loop as tests/test_responses_api.py and tests/test_messages_api.py run, through Chat
    Completions: two tool calls, then the answer, each turn with the key that signed what it carries back."""
    fake.bind_signatures = True
    kl = start_keyloom(FAKE_STREAMING="false")
    fake.script.extend([Reply(body=function_call_reply("getWeather", {"location": "Paris"})),
                        Reply(body=function_call_reply("getWeather", {"location": "Rome"})),
                        Reply(body=text_reply("Paris 18C, Rome 24C."))])
    messages: list = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    issuers = []
    for turn in range(3):
        if stream:
            chunks = list(kl.client().chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER],
                                                              stream=True))
            calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            call = (calls[0].id, calls[0].function.arguments) if calls else None
        else:
            msg = kl.client().chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER]) \
                .choices[0].message
            text = msg.content or ""
            call = (msg.tool_calls[0].id, msg.tool_calls[0].function.arguments) if msg.tool_calls else None
        issuers.append(fake.generate_calls()[-1].key)
        if turn < 2:
            assert call is not None
            messages += [{"role": "assistant", "tool_calls": [{"id": call[0], "type": "function", "function": {
                "name": "getWeather", "arguments": call[1]}}]},
                         {"role": "tool", "tool_call_id": call[0], "content": "sunny"}]
        else:
            assert text == "Paris 18C, Rome 24C."
    assert len(fake.generate_calls()) == 3
    assert issuers[1] == issuers[0] and issuers[2] == issuers[1]
    sigs = [p.get("thoughtSignature") for c in fake.generate_calls()[2].body["contents"] if c["role"] == "model"
            for p in c["parts"] if "functionCall" in p]
    assert sigs == [key_signature(issuers[0]), key_signature(issuers[1])]
