"""The upstream fault matrix: every way Gemini can misbehave × {non-streaming, fake streaming, real streaming}
× the three APIs a client can speak (Chat Completions, Responses, Messages).

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

import anthropic
import httpx
import pytest
from pydantic import TypeAdapter

from tests.conftest import KEYS
from tests.fake_gemini import FakeGemini, Reply, bad_request_body, frame, stream_events, text_reply
from tests.support.openai_schema import validate
from tests.support.sse import named_events

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


class Api:
    """One client API: its request, and how its answers, streams and errors read."""

    name = "chat"
    path = "/v1/chat/completions"

    def body(self, mode: str) -> dict:
        return {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hello"}],
                "stream": mode != "plain"}

    def headers(self, kl) -> dict:
        return kl.auth()

    def answer_text(self, answer: dict) -> str:
        validate("CreateChatCompletionResponse", answer)
        return answer["choices"][0]["message"]["content"]

    def stream(self, text: str) -> tuple[str, list[dict], bool]:
        """→ (the text streamed, the error events, whether the stream ended as finished)."""
        events = [json.loads(b[6:]) for b in text.replace("\r\n", "\n").split("\n\n")
                  if b.startswith("data: ") and b != "data: [DONE]"]
        for e in events:
            if "error" not in e:
                validate("CreateChatCompletionStreamResponse", e)
        content = "".join((c.get("delta") or {}).get("content") or "" for e in events for c in e.get("choices") or ())
        errors = [e["error"] for e in events if "error" in e]
        for e in errors:
            validate("ErrorResponse", {"error": e})
        return content, errors, text.endswith("data: [DONE]\n\n")

    def error(self, status: int, body: dict) -> tuple[int, str]:
        """→ (status, code) of an error answered before any stream, as the chat route would name it."""
        validate("ErrorResponse", body)
        return status, body["error"]["code"]

    def stream_error_code(self, error: dict) -> str:
        return error["code"]

    def expected(self, status: int, code: str) -> tuple[int, str]:
        return status, code


def _named(text: str) -> list[dict]:
    return named_events(text.replace("\r\n", "\n").split("\n"))


class ResponsesApi(Api):
    name = "responses"
    path = "/v1/responses"

    def body(self, mode: str) -> dict:
        return {"model": "gemini-2.5-flash", "input": "hello", "stream": mode != "plain", "store": False}

    def answer_text(self, answer: dict) -> str:
        validate("Response", answer)
        return "".join(c["text"] for o in answer["output"] if o["type"] == "message" for c in o["content"])

    def stream(self, text: str) -> tuple[str, list[dict], bool]:
        events = _named(text)
        for e in events:
            validate("ResponseStreamEvent", e)
        content = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        errors = [e["response"]["error"] for e in events if e["type"] == "response.failed"]
        return content, errors, bool(events) and events[-1]["type"] == "response.completed"

    def stream_error_code(self, error: dict) -> str:
        return error["code"]

    def expected(self, status: int, code: str) -> tuple[int, str]:
        return status, code

    def committed_code(self, status: int, code: str) -> str:
        """The code `response.failed` carries (Codex reads it: see handlers/responses.py)."""
        return code if code in ("insufficient_quota", "rate_limit_exceeded") else \
            "invalid_prompt" if status < 500 else "server_error"


ANTHROPIC_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
                   529: "overloaded_error"}


class MessagesApi(Api):
    name = "messages"
    path = "/v1/messages"

    def body(self, mode: str) -> dict:
        return {"model": "gemini-2.5-flash", "max_tokens": 1000, "messages": [{"role": "user", "content": "hello"}],
                "stream": mode != "plain"}

    def headers(self, kl) -> dict:
        return {"x-api-key": kl.auth()["Authorization"][7:], "anthropic-version": "2023-06-01"}

    def answer_text(self, answer: dict) -> str:
        message = anthropic.types.Message.model_validate(answer)
        return "".join(b.text for b in message.content if b.type == "text")

    def stream(self, text: str) -> tuple[str, list[dict], bool]:
        events = _named(text)
        for e in events:
            if e["type"] not in ("error", "ping"):
                MESSAGE_EVENT.validate_python(e)
        content = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
        errors = [e["error"] for e in events if e["type"] == "error"]
        return content, errors, bool(events) and events[-1]["type"] == "message_stop"

    def error(self, status: int, body: dict) -> tuple[int, str]:
        assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}
        return status, body["error"]["type"]

    def stream_error_code(self, error: dict) -> str:
        return error["type"]

    def expected(self, status: int, code: str) -> tuple[int, str]:
        status = {502: 529, 503: 529}.get(status, status)  # passing upstream trouble: overloaded, retried
        return status, ANTHROPIC_TYPES[status]

    def committed_code(self, status: int, code: str) -> str:
        return self.expected(status, code)[1]


APIS = {"chat": Api(), "responses": ResponsesApi(), "messages": MessagesApi()}
MESSAGE_EVENT = TypeAdapter(anthropic.types.RawMessageStreamEvent)


def run(kl, mode, api: Api = APIS["chat"]):
    """→ (status, content type, body text)."""
    with httpx.Client(base_url=kl.url, timeout=UPSTREAM_TIMEOUT * 8) as h:  # the bound only ends a hang
        r = h.post(api.path, headers=api.headers(kl), json=api.body(mode))
    return r.status_code, r.headers.get("content-type", ""), r.text


@pytest.mark.parametrize("api", list(APIS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(FAULTS))
def test_fault(start_keyloom, fake, loop_thread, name, mode, api):
    fault, dialect = FAULTS[name], APIS[api]
    fake.mode = mode
    base = f"http://127.0.0.1:{closed_port()}" if name == "connection_refused" else fake.base_url
    kl = start_keyloom(FAKE_STREAMING="false" if mode == "real-stream" else "true", FAKE_STREAMING_INTERVAL="0.3",
                       UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT), GEMINI_BASE_URL=base, MAX_RETRY_NUM="4")
    fault.arrange(fake)
    status, ctype, text = run(kl, mode, dialect)

    assert "Traceback" not in text and "File \"" not in text
    for k in KEYS:
        assert k not in text
    expect = fault.expect[mode]
    stream = mode != "plain"
    if expect in ("recovers", "big"):
        assert status == 200
        wanted = TEXT if expect == "recovers" else BIG
        if stream:
            content, errors, finished = dialect.stream(text)
            assert errors == [] and content == wanted and finished
        else:
            assert dialect.answer_text(json.loads(text)) == wanted
    elif expect == "partial":
        assert status == 200
        content, errors, finished = dialect.stream(text)
        assert content and "alpha".startswith(content.split()[0][:5]) and len(errors) == 1 and not finished
    else:
        want_status, want_code = expect  # type: ignore[misc]
        committed = mode == "fake-stream" and status == 200  # fake streaming answers at once
        if committed:
            content, errors, finished = dialect.stream(text)
            assert content == "" and len(errors) == 1 and not finished
            code = dialect.stream_error_code(errors[0])
            assert code == (dialect.committed_code(want_status, want_code) if api != "chat" else want_code)
        else:
            assert ctype.startswith("application/json")
            assert dialect.error(status, json.loads(text)) == dialect.expected(want_status, want_code)

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
        ok = run(kl, "plain", dialect)
        assert ok[0] == 200
