"""Fake streaming, real streaming, failures after a stream has begun, and client disconnects."""
from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.fake_gemini import Reply, frame, stream_events, text_reply

HELLO = [{"role": "user", "content": "hello"}]


def read_stream(kl, body, timeout=30.0):
    """POST and return (status, headers, [(seconds since start, bytes)], whole text)."""
    start = time.monotonic()
    arrivals = []
    with httpx.Client(base_url=kl.url, timeout=timeout) as h:
        with h.stream("POST", "/v1/chat/completions", headers=kl.auth(), json=body) as r:
            for piece in r.iter_raw():
                arrivals.append((time.monotonic() - start, piece))
            return r.status_code, r.headers, arrivals, b"".join(p for _, p in arrivals).decode()


def data_events(text):
    return [json.loads(block[6:]) for block in text.split("\n\n")
            if block.startswith("data: ") and block != "data: [DONE]"]


def read_stream_until(kl, body, release_when, gate, timeout=60.0):
    """POST and read the stream; when `release_when(text so far)` first holds, set `gate` (the fake's answer
    waits for it). → (status, headers, text): the order of what came is the assertion, never the time."""
    seen = b""
    with httpx.Client(base_url=kl.url, timeout=timeout) as h:
        with h.stream("POST", "/v1/chat/completions", headers=kl.auth(), json=body) as r:
            for piece in r.iter_raw():
                seen += piece
                if not gate.is_set() and release_when(seen.decode()):
                    gate.set()
            return r.status_code, r.headers, seen.decode()


def test_fake_streaming_keeps_the_client_alive_until_the_answer_comes(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="true", FAKE_STREAMING_INTERVAL="0.2")
    gate = threading.Event()
    fake.script.append(Reply(gate=gate, body=text_reply("The whole answer, word for word, arrives intact.")))
    # the answer comes only once the client has had two keep-alives: the connection was never silent meanwhile
    status, headers, text = read_stream_until(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True},
                                              lambda t: t.count(": keep-alive") >= 2, gate)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert text.startswith(": keep-alive") and text.index("data: {") > text.rindex(": keep-alive")
    events = data_events(text)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == \
        "The whole answer, word for word, arrives intact."
    assert text.endswith("data: [DONE]\n\n")
    assert [c.action for c in fake.generate_calls()] == ["generateContent"]


def test_real_streaming_sends_keepalives_while_the_upstream_is_silent(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false", FAKE_STREAMING_INTERVAL="0.2")
    fake.script.append(Reply(body=text_reply("a b c d e f"), event_delay=0.7))
    status, _, arrivals, text = read_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True})
    assert status == 200 and text.count(": keep-alive") >= 3
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in data_events(text)) == "a b c d e f"
    data_times = [t for t, p in arrivals if b"data: {" in p]
    assert data_times[-1] - data_times[0] > 1.0  # chunks were passed on as they came, not buffered


def test_fake_streaming_holds_back_one_interval_so_errors_keep_their_status(start_keyloom, fake):
    # a long interval: whatever the machine's load, a quick failure comes within it
    kl = start_keyloom(FAKE_STREAMING="true", FAKE_STREAMING_INTERVAL="30", MAX_REQUESTS_PER_MINUTE="2")
    for k in list(fake.keys):
        fake.keys[k] = "quota_day"
    # every key over quota (SillyTavern would otherwise keep an empty message): the 429 itself, as JSON
    status, headers, _, text = read_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True})
    assert status == 429 and headers["content-type"].startswith("application/json")
    assert json.loads(text)["error"]["code"] == "rate_limit_exceeded" and int(headers["retry-after"]) > 0
    # decided without an upstream call (here the per-minute client limit): its own status and JSON too
    status, headers, _, text = read_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True})
    status, headers, _, text = read_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True})
    assert status == 429 and headers["content-type"].startswith("application/json")
    assert "MAX_REQUESTS_PER_MINUTE" in json.loads(text)["error"]["message"]


def test_fake_streaming_failure_after_keepalives_arrives_as_an_error_event(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="true", FAKE_STREAMING_INTERVAL="0.2", MAX_RETRY_NUM="1")
    gate = threading.Event()
    fake.script.append(Reply(gate=gate, status=500))
    status, _, text = read_stream_until(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True},
                                        lambda t: ": keep-alive" in t, gate)
    assert status == 200 and text.startswith(": keep-alive")
    [event] = data_events(text)
    assert event["error"]["code"] == "upstream_error" and "[DONE]" not in text


def test_real_streaming_error_within_the_first_interval_keeps_its_http_status(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false", FAKE_STREAMING_INTERVAL="1")
    for k in list(fake.keys):
        fake.keys[k] = "quota_minute"
    status, headers, _, text = read_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True})
    assert status == 429 and headers["content-type"].startswith("application/json")
    assert headers["retry-after"] == "47" and json.loads(text)["error"]["code"] == "rate_limit_exceeded"


def test_an_error_after_keepalives_arrives_as_one_error_event(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="true", FAKE_STREAMING_INTERVAL="0.2", MAX_RETRY_NUM="2")
    gate = threading.Event()
    fake.script.extend([Reply(gate=gate, status=500), Reply(status=500)])
    status, _, text = read_stream_until(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True},
                                        lambda t: ": keep-alive" in t, gate)
    assert status == 200 and text.startswith(": keep-alive")
    events = data_events(text)
    assert len(events) == 1 and events[0]["error"]["code"] == "upstream_error"
    assert "2 attempts" in events[0]["error"]["message"] and "[DONE]" not in text
    # the official SDK turns it into an exception rather than an empty answer (here the failure comes within
    # the interval, so it is the HTTP error itself)
    fake.script.extend([Reply(status=500), Reply(status=500)])
    with pytest.raises(openai.APIError) as e:
        list(kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO, stream=True))
    assert "attempts" in str(e.value)


def test_failure_before_the_first_event_retries_with_the_next_key(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    fake.script.extend([Reply(status=503), Reply(body=text_reply("second key worked"))])
    chunks = list(kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "second key worked"
    calls = fake.generate_calls()
    assert len(calls) == 2 and calls[0].key != calls[1].key


def test_a_stream_that_breaks_midway_ends_with_an_error_and_never_repeats_text(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    events = stream_events(text_reply("alpha beta gamma delta"), pieces=4)
    fake.script.append(Reply(events=[events[0], events[1], frame(events[2])[:25]]))  # truncated third event
    status, _, _, text = read_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True})
    assert status == 200
    evs = data_events(text)
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in evs if e.get("choices"))
    assert content == "alpha beta "
    assert "error" in evs[-1] and evs[-1]["error"]["message"]
    assert "[DONE]" not in text
    assert len(fake.generate_calls()) == 1  # not retried once text had reached the client


def test_a_stream_that_ends_without_finish_reason_is_reported(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    events = stream_events(text_reply("complete words here"), pieces=3)
    fake.script.append(Reply(events=events[:2]))  # closes cleanly but never says it finished
    _, _, _, text = read_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True})
    evs = data_events(text)
    assert evs[-1]["error"]["message"].startswith("Gemini failed") or "before the reply" in evs[-1]["error"]["message"]


def test_prompt_blocked_in_a_stream_is_not_an_empty_answer(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    fake.script.append(Reply(events=[{"promptFeedback": {"blockReason": "SAFETY"},
                                      "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}]))
    status, _, _, text = read_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO, "stream": True})
    assert status == 400
    assert "SAFETY" in json.loads(text)["error"]["message"]
    assert len(fake.generate_calls()) == 1


def wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.mark.parametrize("mode", ["non-stream", "fake-stream", "real-stream"])
def test_client_disconnect_cancels_the_upstream_call(start_keyloom, fake, mode):
    kl = start_keyloom(FAKE_STREAMING="false" if mode == "real-stream" else "true", FAKE_STREAMING_INTERVAL="0.2")
    if mode == "real-stream":
        fake.script.append(Reply(body=text_reply("one two three four five six"), event_delay=2.0))
    else:
        fake.script.append(Reply(delay=5.0))
    body = {"model": "gemini-2.5-flash", "messages": HELLO, "stream": mode != "non-stream"}
    with httpx.Client(base_url=kl.url, timeout=httpx.Timeout(0.6)) as h:
        if mode == "non-stream":
            with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting
                h.post("/v1/chat/completions", headers=kl.auth(), json=body)
        else:
            with h.stream("POST", "/v1/chat/completions", headers=kl.auth(), json=body) as r:
                first = next(r.iter_raw())  # a keep-alive or the first chunk: the stream is under way
                assert first
            # leaving the block closed the connection mid-stream
    assert wait_for(lambda: fake.cancelled == 1), "the upstream call was not cancelled"
    assert len(fake.generate_calls()) == 1
    assert wait_for(lambda: kl.kl.in_flight == 0)
    # and Keyloom serves the next request normally
    assert kl.client().chat.completions.create(model="gemini-2.0-flash", messages=HELLO).choices[0].message.content
