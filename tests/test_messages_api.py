"""POST /v1/messages (and count_tokens) through Keyloom with the official anthropic SDK (`messages.create`,
`messages.stream`): answers, streams with thinking, a three-turn tool loop over a three-key pool with Gemini 3's
key-bound thought signatures, errors in Anthropic's shape with the statuses Claude Code acts on, pings while
a slow answer is made, credentials as x-api-key or Bearer, aliases for claude-… names."""
from __future__ import annotations

import threading

import anthropic
import pytest
from pydantic import TypeAdapter

from tests.conftest import KEYS, PASSWORD
from tests.fake_gemini import Reply, function_call_reply, key_signature, stream_events, text_reply
from tests.support.closing import track
from tests.support.sse import stream_named

WEATHER = {"name": "get_weather", "description": "Weather for a place",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
G3 = "gemini-3-pro-preview"
HELLO = [{"role": "user", "content": "hello there"}]


def client(kl, **kw) -> anthropic.Anthropic:
    kw.setdefault("api_key", PASSWORD)
    return track(anthropic.Anthropic(base_url=kl.url, max_retries=0, timeout=20.0, **kw))


def _raw_events(kl, body, headers=None):
    return stream_named(kl, "/v1/messages", body,
                        headers or {"x-api-key": PASSWORD, "anthropic-version": "2023-06-01"})


def test_a_text_answer_parses_with_the_sdk_types(start_keyloom, fake):
    kl = start_keyloom()
    m = client(kl).messages.create(model="gemini-2.5-flash", max_tokens=1024, messages=HELLO,
                                   system="Be brief.")
    assert isinstance(m, anthropic.types.Message)
    assert m.role == "assistant" and m.stop_reason == "end_turn"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == "Echo: hello there"
    assert m.usage.input_tokens == 10 and m.usage.output_tokens >= 1
    sent = fake.generate_calls()[0].body
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert sent["generationConfig"]["maxOutputTokens"] == 1024


@pytest.mark.parametrize("fake_streaming", [True, False])
def test_the_sdk_stream_gives_the_same_message(start_keyloom, fake, fake_streaming):
    kl = start_keyloom(FAKE_STREAMING=str(fake_streaming).lower())
    fake.script.append(Reply(body=text_reply("one two three four five six", thought="Thinking it over.",
                                             thoughts_tokens=7)))
    with client(kl).messages.stream(model="gemini-2.5-flash", max_tokens=2048, messages=HELLO,
                                    thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "one two three four five six"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Thinking it over."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens >= 7
    assert fake.generate_calls()[0].body["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 1024


def test_the_raw_stream_is_the_exact_event_sequence(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    events = _raw_events(kl, {"model": "gemini-2.5-flash", "max_tokens": 100, "messages": HELLO})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1] == "content_block_start" and "content_block_stop" in kinds
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    adapter = TypeAdapter(anthropic.types.RawMessageStreamEvent)
    for e in events:
        adapter.validate_python(e)


@pytest.mark.parametrize("stream", [False, True])
def test_a_three_turn_tool_loop_over_three_keys_keeps_each_signature_with_its_key(start_keyloom, fake, stream):
    fake.bind_signatures = True
    kl = start_keyloom(FAKE_STREAMING="false")
    fake.script.extend([Reply(body=function_call_reply("get_weather", {"city": "Paris"})),
                        Reply(body=function_call_reply("get_weather", {"city": "Rome"})),
                        Reply(body=text_reply("Paris 18C, Rome 24C."))])
    messages: list = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    issuers = []
    c = client(kl)
    for turn in range(3):
        if stream:
            with c.messages.stream(model=G3, max_tokens=4096, messages=messages, tools=[WEATHER]) as s:
                m = s.get_final_message()
        else:
            m = c.messages.create(model=G3, max_tokens=4096, messages=messages, tools=[WEATHER])
        issuers.append(fake.generate_calls()[-1].key)
        if turn < 2:
            assert m.stop_reason == "tool_use"
            use = next(b for b in m.content if b.type == "tool_use")
            assert use.name == "get_weather" and use.input == {"city": ["Paris", "Rome"][turn]}
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]})
            messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                          "content": "sunny"}]})
        else:
            assert m.content[-1].text == "Paris 18C, Rome 24C."
    calls = fake.generate_calls()
    assert len(calls) == 3
    assert issuers[1] == issuers[0] and issuers[2] == issuers[1]
    sigs = [p.get("thoughtSignature") for c in calls[2].body["contents"] if c["role"] == "model"
            for p in c["parts"] if "functionCall" in p]
    assert sigs == [key_signature(issuers[0]), key_signature(issuers[1])]
    responses = [p["functionResponse"] for c in calls[2].body["contents"] for p in c["parts"]
                 if "functionResponse" in p]
    assert [r["name"] for r in responses] == ["get_weather", "get_weather"]


def test_credentials_as_x_api_key_or_bearer_and_a_wrong_one_is_a_400_claude_code_stops_on(start_keyloom, fake):
    kl = start_keyloom()
    assert client(kl).messages.create(model="gemini-2.5-flash", max_tokens=50, messages=HELLO).content
    assert client(kl, api_key=None, auth_token=PASSWORD).messages.create(
        model="gemini-2.5-flash", max_tokens=50, messages=HELLO).content
    with pytest.raises(anthropic.BadRequestError) as e:
        client(kl, api_key="wrong").messages.create(model="gemini-2.5-flash", max_tokens=50, messages=HELLO)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
    assert "ANTHROPIC_API_KEY" in e.value.body["error"]["message"]
    assert fake.generate_calls()[-1:] and len(fake.generate_calls()) == 2


def test_quota_gone_for_today_is_a_400_and_a_short_wait_a_429_with_retry_after(start_keyloom, fake):
    for k in KEYS:
        fake.keys[k] = "quota_day"
    kl = start_keyloom()
    with pytest.raises(anthropic.BadRequestError) as e:
        client(kl).messages.create(model="gemini-2.5-flash", max_tokens=50, messages=HELLO)
    assert "quota" in e.value.body["error"]["message"]


def test_gemini_overloaded_is_a_529_overloaded_error(start_keyloom, fake):
    for k in KEYS:
        fake.keys[k] = "overloaded"
    kl = start_keyloom(MAX_RETRY_NUM="2")
    with pytest.raises(anthropic.APIStatusError) as e:
        client(kl).messages.create(model="gemini-2.5-flash", max_tokens=50, messages=HELLO)
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"


def test_a_failure_after_the_stream_started_is_an_error_event(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false", MAX_RETRY_NUM="1")
    fake.script.append(Reply(events=stream_events(text_reply("partial answer here"))[:1], reset_after_events=True))
    events = _raw_events(kl, {"model": "gemini-2.5-flash", "max_tokens": 100, "messages": HELLO})
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "error" and "message_stop" not in kinds and "message_delta" not in kinds
    assert events[-1]["error"]["type"] in ("api_error", "overloaded_error")


def test_pings_keep_a_slow_answer_alive_before_message_start(start_keyloom, fake):
    gate = threading.Event()
    fake.script.append(Reply(gate=gate))
    kl = start_keyloom(FAKE_STREAMING_INTERVAL="0.2")
    seen = []
    with kl.http() as h, h.stream("POST", "/v1/messages", headers={"x-api-key": PASSWORD}, json={
            "model": "gemini-2.5-flash", "max_tokens": 50, "messages": HELLO, "stream": True}) as r:
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("event: "):
                seen.append(line[7:])
                if seen.count("ping") == 2:
                    gate.set()  # the answer may come now: two pings went out while it was being made
            if line.startswith("event: message_stop"):
                break
    assert seen[:2] == ["ping", "ping"] and seen[-1] == "message_stop" and "message_start" in seen


def test_count_tokens_is_free(start_keyloom, fake):
    kl = start_keyloom()
    n = client(kl).messages.count_tokens(model="gemini-2.5-flash", messages=[{"role": "user",
                                                                               "content": "one two three"}])
    assert n.input_tokens == 3
    assert fake.generate_calls() == []
    assert [r.action for r in fake.requests] == ["countTokens"]


def test_claude_model_names_through_aliases(start_keyloom, fake):
    kl = start_keyloom(MODEL_ALIASES="claude-*=gemini-2.5-flash")
    m = client(kl).messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=HELLO)
    assert m.model == "claude-sonnet-4-5" and m.content[0].text == "Echo: hello there"
    assert fake.generate_calls()[-1].model == "gemini-2.5-flash"


def test_bad_input_is_a_400_in_anthropic_shape(start_keyloom, fake):
    kl = start_keyloom()
    with kl.http() as h:
        r = h.post("/v1/messages", headers={"x-api-key": PASSWORD},
                   json={"model": "gemini-2.5-flash", "max_tokens": 10, "messages": "nope"})
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert fake.generate_calls() == []


def test_the_request_log_says_which_model_served_an_alias(start_keyloom, fake, loop_thread):
    kl = start_keyloom(MODEL_ALIASES="claude-*=gemini-2.5-flash")
    client(kl).messages.create(model="claude-haiku-4-5", max_tokens=50, messages=HELLO)
    client(kl).messages.create(model="gemini-2.0-flash", max_tokens=50, messages=HELLO)
    loop_thread.run(kl.kl.flusher.flush())
    rows = loop_thread.run(kl.kl.db.fetchall("SELECT model, status FROM request_log ORDER BY id"))
    assert rows == [("claude-haiku-4-5 → gemini-2.5-flash", 200), ("gemini-2.0-flash", 200)]


def test_aliases_are_a_live_setting_the_owner_changes_on_the_dashboard(start_keyloom, fake):
    admin = "admin-password-for-this-test-0123"
    kl = start_keyloom(ADMIN_PASSWORD=admin)
    with pytest.raises(anthropic.NotFoundError):
        client(kl).messages.create(model="claude-opus-4-1", max_tokens=50, messages=HELLO)
    with kl.http(headers={"Authorization": f"Bearer {admin}"}) as http:
        r = http.put("/api/settings", json={"MODEL_ALIASES": "claude-opus-*=gemini-2.5-pro"})
        assert r.status_code == 200, r.text
    m = client(kl).messages.create(model="claude-opus-4-1", max_tokens=50, messages=HELLO)
    assert m.model == "claude-opus-4-1" and fake.generate_calls()[-1].model == "gemini-2.5-pro"
