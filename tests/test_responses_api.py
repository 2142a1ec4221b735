"""POST /v1/responses through Keyloom with the official openai SDK (`responses.create`, `responses.stream`):
answers, streams, a tool loop of three turns over a three-key pool with Gemini 3's key-bound thought signatures,
stored responses and previous_response_id, errors in the shape and status Codex acts on, keep-alives, aliases.
Every answer and every event is checked against the OpenAI spec."""
from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import KEYS, PASSWORD
from tests.fake_gemini import Reply, function_call_reply, key_signature, stream_events, text_reply
from tests.support.openai_schema import validate
from tests.support.sse import stream_named

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a place",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
G3 = "gemini-3-pro-preview"


def _events(kl, body):
    """The SSE events of a streamed /v1/responses request: [(event name, data)]."""
    return [(e["type"], e) for e in stream_named(kl, "/v1/responses", body, kl.auth())]


def test_a_text_answer_validates_against_the_spec(start_keyloom, fake):
    kl = start_keyloom()
    raw = kl.client().responses.with_raw_response.create(model="gemini-2.5-flash", input="hello there",
                                                          instructions="Be brief.")
    body = json.loads(raw.http_response.text)
    validate("Response", body)
    r = raw.parse()
    assert r.status == "completed" and r.output_text == "Echo: hello there"
    assert r.usage.input_tokens == 10 and r.usage.output_tokens >= 1
    sent = fake.generate_calls()[0].body
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert sent["contents"][-1] == {"role": "user", "parts": [{"text": "hello there"}]}


@pytest.mark.parametrize("fake_streaming", [True, False])
def test_a_stream_is_the_full_typed_sequence_in_order(start_keyloom, fake, fake_streaming):
    kl = start_keyloom(FAKE_STREAMING=str(fake_streaming).lower())
    events = _events(kl, {"model": "gemini-2.5-flash", "input": "one two three four five six"})
    names = [n for n, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    for _, data in events:
        validate("ResponseStreamEvent", data)
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == "Echo: one two three four five six"
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == text


def test_the_sdk_stream_helper_accumulates_the_answer(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    with kl.client().responses.stream(model="gemini-2.5-flash", input="hello stream") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Echo: hello stream" == final.output_text


@pytest.mark.parametrize("stream", [False, True])
def test_a_three_turn_tool_loop_over_three_keys_keeps_each_signature_with_its_key(start_keyloom, fake, stream):
    """Gemini 3 binds thought signatures to the key that issued them (the fake does too); the pool rotates."""
    fake.bind_signatures = True
    kl = start_keyloom(FAKE_STREAMING="false")
    client = kl.client()
    fake.script.extend([Reply(body=function_call_reply("get_weather", {"city": "Paris"})),
                        Reply(body=function_call_reply("get_weather", {"city": "Rome"})),
                        Reply(body=text_reply("Paris 18C, Rome 24C."))])
    history: list = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    issuers = []
    for turn in range(3):
        if stream:
            with client.responses.stream(model=G3, input=history, tools=[WEATHER], store=False) as s:
                r = s.get_final_response()
        else:
            r = client.responses.create(model=G3, input=history, tools=[WEATHER], store=False)
        issuers.append(fake.generate_calls()[-1].key)
        if turn < 2:
            call = next(o for o in r.output if o.type == "function_call")
            assert json.loads(call.arguments) == {"city": ["Paris", "Rome"][turn]}
            history += [o.model_dump(exclude_none=True) for o in r.output]
            history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
        else:
            assert r.output_text == "Paris 18C, Rome 24C."
    calls = fake.generate_calls()
    assert len(calls) == 3  # no refused signature on the way
    # every turn after the first went to the key that signed the call it carries back
    assert issuers[1] == issuers[0] and issuers[2] == issuers[1]
    model_turns = [c for c in calls[2].body["contents"] if c["role"] == "model"]
    sigs = [p.get("thoughtSignature") for c in model_turns for p in c["parts"] if "functionCall" in p]
    assert sigs == [key_signature(issuers[0]), key_signature(issuers[1])]


def test_previous_response_id_continues_a_stored_conversation_and_get_and_delete(start_keyloom, fake):
    kl = start_keyloom()
    client = kl.client()
    first = client.responses.create(model="gemini-2.5-flash", input="my name is Ada")
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text
    second = client.responses.create(model="gemini-2.5-flash", input="what is my name?",
                                     previous_response_id=first.id)
    contents = fake.generate_calls()[-1].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[0]["parts"][0]["text"] == "my name is Ada"
    assert contents[1]["parts"][0]["text"] == "Echo: my name is Ada"
    assert second.output_text == "Echo: what is my name?"
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gemini-2.5-flash", input="x", previous_response_id=first.id)


def test_store_false_keeps_nothing(start_keyloom, fake):
    kl = start_keyloom()
    r = kl.client().responses.create(model="gemini-2.5-flash", input="secret", store=False)
    with pytest.raises(openai.NotFoundError):
        kl.client().responses.retrieve(r.id)


def test_every_key_out_for_today_is_insufficient_quota_which_codex_stops_on(start_keyloom, fake):
    for k in KEYS:
        fake.keys[k] = "quota_day"
    kl = start_keyloom()
    with kl.http() as h:
        r = h.post("/v1/responses", headers=kl.auth(), json={"model": "gemini-2.5-flash", "input": "hi"})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "insufficient_quota"
    validate("ErrorResponse", r.json())


def test_a_per_minute_limit_says_when_to_try_again_in_the_words_codex_parses(start_keyloom, fake):
    for k in KEYS:
        fake.keys[k] = "quota_minute"
    kl = start_keyloom()
    with kl.http() as h:
        r = h.post("/v1/responses", headers=kl.auth(), json={"model": "gemini-2.5-flash", "input": "hi"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "try again in" in r.json()["error"]["message"].lower() and int(r.headers["Retry-After"]) >= 1


def test_no_usable_key_is_not_a_5xx_that_codex_would_resend_thirty_times(start_keyloom, fake):
    for k in KEYS:
        fake.keys[k] = "invalid"
    kl = start_keyloom()
    with kl.http() as h:
        r = h.post("/v1/responses", headers=kl.auth(), json={"model": "gemini-2.5-flash", "input": "hi"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_usable_key"


def test_a_failure_after_the_stream_started_ends_with_response_failed(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false", MAX_RETRY_NUM="1")
    events = stream_events(text_reply("partial answer here"))[:1]  # the first event, then the connection drops
    fake.script.append(Reply(events=events, reset_after_events=True))
    out = _events(kl, {"model": "gemini-2.5-flash", "input": "hi"})
    names = [n for n, _ in out]
    assert "response.completed" not in names
    assert names[-2:] == ["error", "response.failed"]
    assert "".join(d["delta"] for n, d in out if n == "response.output_text.delta") == "partial "
    validate("ResponseStreamEvent", out[-1][1])
    assert out[-1][1]["response"]["status"] == "failed"


def test_bad_input_is_a_400_naming_the_field(start_keyloom, fake):
    kl = start_keyloom()
    with kl.http() as h:
        r = h.post("/v1/responses", headers=kl.auth(), json={"model": "gemini-2.5-flash", "input": 42})
    assert r.status_code == 400 and r.json()["error"]["param"] is not None
    assert fake.generate_calls() == []


def test_wrong_password_is_a_401_in_openai_shape(start_keyloom, fake):
    kl = start_keyloom()
    with pytest.raises(openai.AuthenticationError):
        kl.client(api_key=PASSWORD + "x").responses.create(model="gemini-2.5-flash", input="hi")


def test_model_aliases_serve_codexs_model_names_and_are_listed(start_keyloom, fake):
    kl = start_keyloom(MODEL_ALIASES="gpt-5*=gemini-2.5-flash,gpt-4o=gemini-2.0-flash")
    r = kl.client().responses.create(model="gpt-5.1-codex", input="hello alias")
    assert r.output_text == "Echo: hello alias" and r.model == "gpt-5.1-codex"
    assert fake.generate_calls()[-1].model == "gemini-2.5-flash"
    ids = {m.id: m.owned_by for m in kl.client().models.list().data}
    assert ids["gpt-4o"] == "keyloom alias of gemini-2.0-flash"
    assert "gpt-5*" not in ids  # a pattern is not a model a picker could offer


@pytest.mark.parametrize("kind", [{}, [], 7])
def test_an_item_type_that_is_not_a_string_is_a_400(start_keyloom, fake, kind):
    kl = start_keyloom()
    with kl.http() as h:
        r = h.post("/v1/responses", headers=kl.auth(), json={"model": "gemini-2.5-flash", "input": [{"type": kind}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0].type"
