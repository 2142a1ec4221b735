"""The upstream fault matrix: every way Gemini can misbehave × {non-streaming, fake streaming, real streaming}.

For each case the client must get a well-formed answer or error in time (no hang, no traceback text),
the next healthy key must be used where one exists, the counters and the request log must agree with
what the fake received, and Keyloom must keep serving.
"""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import KEYS
from tests.fake_gemini import FakeGemini, Reply, bad_request_body, frame, stream_events, text_reply
from tests.support.openai_schema import validate

MODES = ("plain", "fake-stream", "real-stream")
TEXT = "the healthy key answered"
BIG = " ".join(f"word{i}" for i in range(400_000))  # about 4 MB of text
UPSTREAM_TIMEOUT = 1.0


@dataclass
class Fault:
    """What the fake does on the first attempt, and what the client must see in each mode."""

    arrange: Callable[[FakeGemini], None]
    # "recovers": the answer from the next key (2 upstream calls); "big": a large answer in one call;
    # (status, code): an error, given as its own status or, once a stream has begun, as an error event;
    # "partial": a real stream already under way ends with an error event after the text that came.
    expect: dict[str, object]
    calls: dict[str, int]


def first(reply: Reply) -> Callable[[FakeGemini], None]:
    def arrange(fake: FakeGemini) -> None:
        fake.script.extend([reply, Reply(body=text_reply(TEXT))])
    return arrange


def first_key(behaviour: str) -> Callable[[FakeGemini], None]:
    def arrange(fake: FakeGemini) -> None:
        fake.keys[KEYS[0]] = behaviour
        fake.script.append(Reply(body=text_reply(TEXT)))
    return arrange


def same(expect, calls=2):
    return {m: expect for m in MODES}, {m: calls for m in MODES}


_events = stream_events(text_reply("alpha beta gamma delta epsilon"), pieces=5)
MID_STREAM_RESET = Reply(events=_events[:2], reset_after_events=True)
TRUNCATED_EVENT = Reply(events=[*_events[:2], frame(_events[2])[:30]], reset_after_events=False)
REFUSED = object()

FAULTS: dict[str, Fault] = {
    "request_400": Fault(first(Reply(status=400, body=bad_request_body(
        "Please ensure that multiturn requests alternate between user and model."))),
        {"plain": (400, "upstream_rejected"), "fake-stream": (400, "upstream_rejected"),
         "real-stream": (400, "upstream_rejected")}, {m: 1 for m in MODES}),
    "invalid_key": Fault(first_key("invalid"), *same("recovers")),
    "suspended_key": Fault(first_key("suspended"), *same("recovers")),
    "quota_per_minute": Fault(first_key("quota_minute"), *same("recovers")),
    "quota_per_day": Fault(first_key("quota_day"), *same("recovers")),
    "internal_500": Fault(first(Reply(status=500)), *same("recovers")),
    "overloaded_503": Fault(first(Reply(status=503, body={"error": {
        "code": 503, "status": "UNAVAILABLE", "message": "The model is overloaded. Please try again later."}})),
        *same("recovers")),
    "no_answer_until_timeout": Fault(first(Reply(delay=UPSTREAM_TIMEOUT + 1.0)), *same("recovers")),
    "connection_refused": Fault(lambda fake: None, *same((502, "upstream_unreachable"), calls=0)),
    "reset_before_headers": Fault(first(Reply(close_early=True)), *same("recovers")),
    "reset_mid_body": Fault(
        lambda fake: fake.script.extend([
            Reply(raw=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n"
                      b'{"candidates": [{"content": {"parts": [{"text": "cut'),
            Reply(body=text_reply(TEXT))]) if fake.mode != "real-stream" else
        fake.script.extend([MID_STREAM_RESET, Reply(body=text_reply(TEXT))]),
        {"plain": "recovers", "fake-stream": "recovers", "real-stream": "partial"},
        {"plain": 2, "fake-stream": 2, "real-stream": 1}),
    "truncated_sse_event": Fault(
        lambda fake: fake.script.extend([TRUNCATED_EVENT, Reply(body=text_reply(TEXT))]) if fake.mode == "real-stream"
        else fake.script.extend([Reply(body=b'{"candidates": [{"content": {"parts": [{"te'),
                                 Reply(body=text_reply(TEXT))]),
        {"plain": "recovers", "fake-stream": "recovers", "real-stream": "partial"},
        {"plain": 2, "fake-stream": 2, "real-stream": 1}),
    "malformed_json": Fault(
        lambda fake: fake.script.extend([Reply(events=[b"data: {not json at all\r\n\r\n"], body=b"{not json at all"),
                                         Reply(body=text_reply(TEXT))]), *same("recovers")),
    "empty_candidate": Fault(first(Reply(body={"candidates": [{"content": {"parts": [], "role": "model"},
                                                               "finishReason": "STOP", "index": 0}]})),
                             *same("recovers")),
    "blocked_prompt": Fault(first(Reply(body={"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})),
                            {m: (400, "content_filter") for m in MODES}, {m: 1 for m in MODES}),
    "several_mb_reply": Fault(lambda fake: fake.script.append(Reply(body=text_reply(BIG))), *same("big", calls=1)),
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(kl, mode):
    """→ (status, content type, body text, seconds)."""
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hello"}],
            "stream": mode != "plain"}
    start = time.monotonic()
    with httpx.Client(base_url=kl.url, timeout=UPSTREAM_TIMEOUT * 8) as h:
        r = h.post("/v1/chat/completions", headers=kl.auth(), json=body)
    return r.status_code, r.headers.get("content-type", ""), r.text, time.monotonic() - start


def sse(text):
    events = [json.loads(b[6:]) for b in text.replace("\r\n", "\n").split("\n\n")
              if b.startswith("data: ") and b != "data: [DONE]"]
    content = "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices") or ())
    errors = [e["error"] for e in events if "error" in e]
    return events, content, errors


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(FAULTS))
def test_fault(start_keyloom, fake, loop_thread, name, mode):
    fault = FAULTS[name]
    fake.mode = mode
    base = f"http://127.0.0.1:{closed_port()}" if name == "connection_refused" else fake.base_url
    kl = start_keyloom(FAKE_STREAMING="false" if mode == "real-stream" else "true", FAKE_STREAMING_INTERVAL="0.3",
                       UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT), GEMINI_BASE_URL=base, MAX_RETRY_NUM="4")
    fault.arrange(fake)
    status, ctype, text, seconds = run(kl, mode)

    assert seconds < UPSTREAM_TIMEOUT * 6, "the client waited too long"
    assert "Traceback" not in text and "File \"" not in text
    for k in KEYS:
        assert k not in text
    expect = fault.expect[mode]
    stream = mode != "plain"
    if expect in ("recovers", "big"):
        assert status == 200
        wanted = TEXT if expect == "recovers" else BIG
        if stream:
            events, content, errors = sse(text)
            assert errors == [] and content == wanted and text.endswith("data: [DONE]\n\n")
            for e in events:
                validate("CreateChatCompletionStreamResponse", e)
        else:
            answer = json.loads(text)
            validate("CreateChatCompletionResponse", answer)
            assert answer["choices"][0]["message"]["content"] == wanted
    elif expect == "partial":
        assert status == 200
        events, content, errors = sse(text)
        assert content and "alpha".startswith(content.split()[0][:5]) and len(errors) == 1
        assert "[DONE]" not in text
    else:
        want_status, want_code = expect
        committed = mode == "fake-stream" and status == 200  # fake streaming answers at once
        if committed:
            _, content, errors = sse(text)
            assert content == "" and len(errors) == 1 and errors[0]["code"] == want_code
            validate("ErrorResponse", {"error": errors[0]})
        else:
            assert status == want_status and ctype.startswith("application/json")
            validate("ErrorResponse", json.loads(text))
            assert json.loads(text)["error"]["code"] == want_code

    calls = fake.generate_calls()
    assert len(calls) == fault.calls[mode], [c.key for c in calls]
    if fault.calls[mode] == 2:
        assert calls[0].key != calls[1].key  # the next healthy key, not the same one again

    # the counters and the request log agree with what the fake received
    deadline = time.monotonic() + 5
    while kl.kl.in_flight and time.monotonic() < deadline:  # the client can have it all before Keyloom is done
        time.sleep(0.01)
    loop_thread.run(kl.kl.flusher.flush())
    usage = kl.kl.pool.usage
    assert sum(usage.requests(k.fp, "gemini-2.5-flash") for k in kl.kl.pool.keys) == len(calls)
    rows = loop_thread.run(kl.kl.db.fetchall("SELECT attempts, status, error FROM request_log"))
    assert len(rows) == 1
    attempts, logged_status, error = rows[0]
    # a refused connection is an attempt that never reached Google: attempted, not counted; the same transport
    # failure three times ends the request (the policy table's limit), before MAX_RETRY_NUM (4 here)
    assert attempts == (len(calls) if name != "connection_refused" else 3)
    assert (error is None) == (expect in ("recovers", "big"))

    # and it keeps serving
    if name != "connection_refused":
        fake.keys.clear()
        fake.allow(*KEYS)
        fake.script.clear()
        ok = run(kl, "plain")
        assert ok[0] == 200
