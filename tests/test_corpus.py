"""Real Gemini replies, recorded by others (tests/data/gemini_corpus, sources in its SOURCES.md), replayed
through every way Keyloom serves them.

Each recording is answered by the fake Gemini exactly as recorded, and reaches the client through:

- `openai`: `/v1/chat/completions` without streaming (Keyloom calls generateContent);
- `openai-fake-stream`: streaming with FAKE_STREAMING=true (Keyloom still calls generateContent);
- `openai-real-stream`: streaming with FAKE_STREAMING=false (Keyloom calls streamGenerateContent; a whole
  reply is sent as one event, a recorded stream as its events);
- `gemini-generate` and `gemini-stream`: the Gemini API routes, where the client must see what Gemini sent.

A recorded stream (`*.sse.json`) is replayed only where Keyloom asks Gemini for a stream (`openai-real-stream`,
`gemini-stream`): merging its events into one reply would test a reply nobody recorded.

What the client should get is derived from the recording by the small rules of `expect()`, never from what
Keyloom answers today: the expectations follow issue 13 and the README ("How it behaves", "Beyond chat");
where the README is silent the rule says which choice was made and why. Every OpenAI answer, chunk and error is
validated against the OpenAI spec. Tool calls are also sent back as the next turn, and the request Keyloom
then sends upstream must carry the call (thought signature and `id` included) and its result.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, Running
from tests.fake_gemini import FakeGemini, Recorded, Reply
from tests.support.openai_schema import validate

CORPUS = Path(__file__).resolve().parent / "data" / "gemini_corpus"

OPENAI_MODES = ("openai", "openai-fake-stream", "openai-real-stream")
GEMINI_MODES = ("gemini-generate", "gemini-stream")
STREAM_MODES = ("openai-real-stream", "gemini-stream")  # the modes in which Keyloom asks Gemini for a stream

# Gemini's finish reasons that mean "the output was filtered" (reference: FinishReason in the Gemini API).
FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                      "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "LANGUAGE"})
# Google's documented placeholder signature for a function call whose real signature is unknown.
PLACEHOLDER_SIGNATURE = "skip_thought_signature_validator"
# Error details that say the key, not the request, is at fault: Keyloom takes such keys out of rotation
# (README, "How it behaves": Keys), so the client is told that no usable key is left.
KEY_REASONS = frozenset({"API_KEY_INVALID", "SERVICE_DISABLED", "CONSUMER_SUSPENDED", "API_KEY_SERVICE_BLOCKED"})


# -- the corpus -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recording:
    """One file of the corpus. `events` is set for a recorded stream (an item that is a string is a block
    Gemini sent without `data:` framing, such as an error in the middle of a stream); `status` and `body`
    for a reply (`status` other than 200: an error body, stored as `{"status": …, "body": …}`)."""

    name: str
    status: int = 200
    body: dict[str, Any] | None = None
    events: tuple[Any, ...] | None = None

    @property
    def stream(self) -> bool:
        return self.events is not None

    def as_events(self) -> list[Any]:
        """What Gemini's stream carries: the recorded events, or a whole reply as the one event."""
        return list(self.events) if self.events is not None else [self.body]


def load(path: Path) -> Recording:
    data = json.loads(path.read_text(encoding="utf-8"))
    if path.name.endswith(".sse.json"):
        return Recording(path.name, events=tuple(data))
    if set(data) == {"status", "body"}:
        return Recording(path.name, status=int(data["status"]), body=data["body"])
    return Recording(path.name, body=data)


RECORDINGS = [load(p) for p in sorted(CORPUS.glob("*.json"))]


def cases(modes: Callable[[Recording], tuple[str, ...]]) -> list[Any]:
    return [pytest.param(r, m, id=f"{r.name.removesuffix('.json')}-{m}") for r in RECORDINGS for m in modes(r)]


def all_modes(r: Recording) -> tuple[str, ...]:
    return STREAM_MODES if r.stream else OPENAI_MODES + GEMINI_MODES


# -- what the client should get ---------------------------------------------------------------------

@dataclass
class Call:
    name: str
    args: dict[str, Any]
    signature: str | None
    id: str | None


@dataclass
class Answer:
    """A successful OpenAI answer."""

    content: str                     # the text of the answer's non-thought parts, code rendered as Markdown
    reasoning: str                   # the thought parts' text
    calls: list[Call]
    images: list[str]                # data URLs
    sources: list[tuple[str, str]]   # (title, uri) of the grounding chunks, in order, without repeats
    finish_reason: str | None        # None: the stream ends with an error instead (`stream_error`)
    usage: dict[str, Any] | None
    stream_error: str | None = None  # Gemini's message of an error that ended the stream after some output


@dataclass
class Failure:
    """An OpenAI error. `status` None: any 4xx/5xx; `words` must all appear in the message."""

    status: int | None
    words: list[str] = field(default_factory=list)
    code: str | None = None


def render(part: dict[str, Any]) -> str:
    """A non-thought part as answer text. Code execution is shown the way Keyloom renders it (README is
    silent; server/translate/gemini_to_openai.py): the code as a fenced block labelled with its language in
    lower case, its result as a plain fenced block."""
    if isinstance(part.get("text"), str):
        return part["text"]
    if isinstance(part.get("executableCode"), dict):
        code = part["executableCode"]
        return f"\n```{str(code.get('language', '')).lower()}\n{code.get('code', '')}\n```\n"
    if isinstance(part.get("codeExecutionResult"), dict):
        return f"\n```\n{part['codeExecutionResult'].get('output', '')}\n```\n"
    return ""


def is_answer_part(part: dict[str, Any]) -> bool:
    """A part the client is meant to see (not a thought, not an empty text carrying only a signature)."""
    if part.get("thought"):
        return False
    return bool(part.get("text")) or any(k in part for k in ("functionCall", "inlineData", "executableCode",
                                                              "codeExecutionResult"))


def merged(events: list[Any]) -> tuple[dict[str, Any], str | None]:
    """A recorded stream as the one reply it adds up to (parts in order, the last finish reason, grounding and
    usage), and the message of an error that ended it, if any."""
    parts: list[dict[str, Any]] = []
    finish = None
    grounding = None
    usage = None
    feedback = None
    error = None
    for event in events:
        if isinstance(event, str):
            event = json.loads(event)
        if isinstance(event.get("error"), dict):
            error = str(event["error"].get("message", ""))
            continue
        feedback = event.get("promptFeedback") or feedback
        usage = event.get("usageMetadata") or usage
        for cand in event.get("candidates") or ():
            parts.extend((cand.get("content") or {}).get("parts") or ())
            finish = cand.get("finishReason") or finish
            grounding = cand.get("groundingMetadata") or grounding
    cand = {"content": {"parts": parts}, "finishReason": finish}
    if grounding:
        cand["groundingMetadata"] = grounding
    reply: dict[str, Any] = {"candidates": [cand] if (parts or finish) else []}
    if usage:
        reply["usageMetadata"] = usage
    if feedback:
        reply["promptFeedback"] = feedback
    return reply, error


def expected_usage(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """Gemini usage → OpenAI usage. Prompt tokens include `toolUsePromptTokenCount` (the tool's results fed
    back to the model, billed as input: without them prompt + completion would not add up to Gemini's
    `totalTokenCount`); completion tokens include the thoughts; cached and reasoning tokens in the details."""
    if not meta:
        return None
    prompt = meta.get("promptTokenCount", 0) + meta.get("toolUsePromptTokenCount", 0)
    thoughts = meta.get("thoughtsTokenCount", 0)
    completion = meta.get("candidatesTokenCount", 0) + thoughts
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "cached_tokens": meta.get("cachedContentTokenCount", 0), "reasoning_tokens": thoughts}


def finish_reason(gemini: str | None, calls: bool) -> str:
    """A finish reason of an answer that has content. Anything not named here is a new case for the corpus
    to decide, not something to guess."""
    if calls:
        return "tool_calls"
    if gemini in (None, "STOP"):
        return "stop"
    if gemini == "MAX_TOKENS":
        return "length"
    if gemini in FILTERED:
        return "content_filter"
    raise ValueError(f"no expectation yet for an answer that ends with finishReason {gemini}")


def error_status(status: int, body: dict[str, Any]) -> int:
    """The status an upstream error body should reach the client with: its own, except when it says the
    key is at fault (then every key is rejected in turn and no usable key is left: 503)."""
    details = body.get("error", {}).get("details") or []
    reasons = {d.get("reason") for d in details if isinstance(d, dict)}
    return 503 if reasons & KEY_REASONS else status


def expect(rec: Recording) -> Answer | Failure:
    """The OpenAI result a recording should produce (issue 13's rules)."""
    if rec.status != 200:
        assert rec.body is not None
        # Google's "Please retry in …s" names one key's wait; a pool-wide 429 names the pool's instead
        message = re.sub(r"\s*Please retry in [0-9.]+\s*s\.?", "", rec.body["error"]["message"]).strip()
        return Failure(error_status(rec.status, rec.body), [message])
    reply, stream_error = merged(rec.as_events())
    cands = reply.get("candidates") or []
    block = (reply.get("promptFeedback") or {}).get("blockReason")
    if block and not cands:  # README: a blocked prompt is an error naming the block reason, never empty
        return Failure(400, [block], code="content_filter")
    cand = cands[0] if cands else {}
    parts = [p for p in (cand.get("content") or {}).get("parts") or () if isinstance(p, dict)]
    if not any(is_answer_part(p) for p in parts):
        # Nothing to show (filtered, NO_IMAGE, MALFORMED_FUNCTION_CALL, …): an error naming why, never a
        # "stop" with an empty message. Keyloom may retry first, so the status is any error status.
        return Failure(None, [cand.get("finishReason") or "empty"])
    calls = [Call(p["functionCall"].get("name", ""), p["functionCall"].get("args") or {},
                  p.get("thoughtSignature"), p["functionCall"].get("id"))
             for p in parts if isinstance(p.get("functionCall"), dict)]
    sources: list[tuple[str, str]] = []
    for chunk in (cand.get("groundingMetadata") or {}).get("groundingChunks") or ():
        web = chunk.get("web") or {}
        if web.get("uri") and (web.get("title") or web["uri"], web["uri"]) not in sources:
            sources.append((web.get("title") or web["uri"], web["uri"]))
    return Answer(
        content="".join(render(p) for p in parts if not p.get("thought")),
        reasoning="".join(p["text"] for p in parts if p.get("thought") and isinstance(p.get("text"), str)),
        calls=calls,
        images=[f"data:{p['inlineData']['mimeType']};base64,{p['inlineData']['data']}"
                for p in parts if isinstance(p.get("inlineData"), dict) and not p.get("thought")],
        sources=sources,
        finish_reason=None if stream_error is not None else finish_reason(cand.get("finishReason"), bool(calls)),
        usage=expected_usage(reply.get("usageMetadata")),
        stream_error=stream_error,
    )


# -- replaying ----------------------------------------------------------------------------------------

def model_for(rec: Recording) -> str:
    """A model the fake lists, of the recording's generation (Gemini 3 requests differ: thought signatures)."""
    first = rec.as_events()[0]
    version = str(first.get("modelVersion", "")) if isinstance(first, dict) else ""
    return "gemini-3-pro-preview" if version.startswith("gemini-3") else "gemini-2.5-flash"


def serve(fake: FakeGemini, rec: Recording) -> None:
    """The fake answers every call (every retry too) with the recording: Gemini would answer the same."""
    def answer(call: Recorded) -> Reply:
        if rec.status != 200:
            return Reply(status=rec.status, body=rec.body)
        if call.action == "streamGenerateContent":
            return Reply(events=[e.encode() if isinstance(e, str) else e for e in rec.as_events()])
        return Reply(body=rec.body)
    fake.responder = answer


def start(start_keyloom: Callable[..., Running], mode: str) -> Running:
    # Three attempts, one per key: a failure every key gets the same way ends the request without waits.
    return start_keyloom(FAKE_STREAMING="false" if mode == "openai-real-stream" else "true", MAX_RETRY_NUM="3")


HELLO = [{"role": "user", "content": "hello"}]


def chat_body(rec: Recording, mode: str, messages: list[dict[str, Any]] = HELLO) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model_for(rec), "messages": messages}
    if mode != "openai":
        body.update(stream=True, stream_options={"include_usage": True})
    return body


@dataclass
class Sse:
    events: list[dict[str, Any]]
    done: bool


def parse_sse(text: str) -> Sse:
    """OpenAI-style SSE: `data:` events, comments (keep-alives) skipped, `[DONE]` noted."""
    events, done = [], False
    for block in text.replace("\r\n", "\n").split("\n\n"):
        for line in block.split("\n"):
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return Sse(events, done)


def parse_gemini_sse(text: str) -> list[Any]:
    """Gemini's SSE as the client reads it: `data:` events and bare JSON blocks (an error in a stream)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        out.append(json.loads("\n".join(data)) if data else json.loads(block))
    return out


@dataclass
class Result:
    """What the client got from a chat request: a JSON body, or an event stream."""

    status: int
    headers: httpx.Headers
    json: Any = None
    sse: Sse | None = None


def chat(kl: Running, body: dict[str, Any]) -> Result:
    with httpx.Client(base_url=kl.url, timeout=30.0) as h:
        with h.stream("POST", "/v1/chat/completions", headers=kl.auth(), json=body) as r:
            text = r.read().decode()
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                return Result(r.status_code, r.headers, sse=parse_sse(text))
            return Result(r.status_code, r.headers, json=json.loads(text))


# -- checking an OpenAI answer --------------------------------------------------------------------------

@dataclass
class Got:
    """An OpenAI answer, the same whether it came whole or in chunks."""

    content: str
    reasoning: str
    calls: list[dict[str, Any]]
    images: list[str]
    finish_reason: str | None
    usage: dict[str, Any] | None
    citations: list[str] | None
    annotations: list[dict[str, Any]] | None = None


def image_urls(images: Any) -> list[str]:
    return [i["image_url"]["url"] for i in images or () if i.get("type") == "image_url"]


def from_completion(body: dict[str, Any]) -> Got:
    validate("CreateChatCompletionResponse", body)
    assert body["object"] == "chat.completion" and len(body["choices"]) == 1, body
    choice = body["choices"][0]
    message = choice["message"]
    return Got(message.get("content") or "", message.get("reasoning_content") or "", message.get("tool_calls") or [],
               image_urls(message.get("images")), choice["finish_reason"], body.get("usage"), body.get("citations"),
               message.get("annotations"))


def from_chunks(sse: Sse, expect_error: bool) -> tuple[Got, dict[str, Any] | None]:
    """Chunks → the answer they add up to, and the error event that ended the stream (if any). Checks the
    order the OpenAI stream format requires: content first, then exactly one finish chunk, then the usage
    chunk; an error is the last event and no finish reason comes before it."""
    error = None
    if sse.events and "error" in sse.events[-1]:
        error = sse.events[-1]
        validate("ErrorResponse", error)
    chunks = sse.events[:-1] if error else sse.events
    content, reasoning, images, citations = "", "", [], None
    calls: dict[int, dict[str, Any]] = {}
    finishes: list[str] = []
    usage = None
    for n, chunk in enumerate(chunks):
        assert "error" not in chunk, f"an error event before the end of the stream: {chunk}"
        validate("CreateChatCompletionStreamResponse", chunk)
        if chunk.get("usage"):
            usage = chunk["usage"]
            assert n == len(chunks) - 1 and not chunk["choices"], "the usage chunk must come last, without choices"
        citations = chunk.get("citations") or citations
        for choice in chunk["choices"]:
            assert choice["index"] == 0
            delta = choice["delta"]
            if finishes and (delta.get("content") or delta.get("tool_calls") or delta.get("images")):
                raise AssertionError(f"output after the finish chunk: {chunk}")
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            images += image_urls(delta.get("images"))
            for tc in delta.get("tool_calls") or ():
                slot = calls.setdefault(tc["index"], {"id": None, "type": None, "function": {"name": "",
                                                                                           "arguments": ""}})
                slot["id"] = tc.get("id") or slot["id"]
                slot["type"] = tc.get("type") or slot["type"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                finishes.append(choice["finish_reason"])
    if expect_error:
        assert error is not None, "the stream should end with an error event"
        assert not finishes, f"a finish reason {finishes} reached the client before the error"
        assert not sse.done, "[DONE] after an error"
    else:
        assert error is None, f"the stream ended with an error: {error}"
        assert len(finishes) == 1, f"expected one finish chunk, got {finishes}"
        assert sse.done, "the stream did not end with [DONE]"
    got = Got(content, reasoning, [calls[i] for i in sorted(calls)], images, finishes[0] if finishes else None,
              usage, citations)
    return got, error


def without_markdown_images(content: str, images: list[str]) -> str:
    """The answer's text without the Markdown copies of its images: README (IMAGE_OUTPUT, default BOTH) puts
    each drawn image into the text too, for clients that show only text. Where they stand and what
    whitespace surrounds them is Keyloom's choice, so the comparison then ignores leading and trailing
    whitespace; each Markdown image must show one of the answer's images."""
    if not images:
        return content
    markdown = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
    for url in markdown.findall(content):
        assert url in images, f"a Markdown image that is not one of the answer's: {url[:80]}"
    return markdown.sub("", content).strip()


def check_answer(got: Got, want: Answer, whole: bool) -> None:
    if want.sources:
        # README ("Beyond chat", -search): the sources end the answer as a numbered list of links, and come as
        # url_citation annotations on the message and a top-level `citations` list.
        assert got.content.startswith(want.content), (got.content, want.content)
        rest, at = got.content[len(want.content):], 0
        for n, (title, uri) in enumerate(want.sources, 1):
            line = f"{n}. [{title}]({uri})"
            found = rest.find(line, at)
            assert found >= 0, f"source {n} missing from the answer's list: {line!r} in {rest!r}"
            at = found + len(line)
        assert got.citations == [uri for _, uri in want.sources]
        if whole:
            assert [a["url_citation"]["url"] for a in got.annotations or ()] == [uri for _, uri in want.sources]
    else:
        assert without_markdown_images(got.content, want.images) == (
            want.content.strip() if want.images else want.content)
    assert got.reasoning == want.reasoning
    assert got.images == want.images
    assert len(got.calls) == len(want.calls), got.calls
    for call, w in zip(got.calls, want.calls, strict=True):
        assert call["type"] == "function" and call["id"], call
        assert call["function"]["name"] == w.name
        assert json.loads(call["function"]["arguments"]) == w.args
    assert got.finish_reason == want.finish_reason
    if want.usage is not None:
        u = got.usage
        assert u is not None, "no usage"
        assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (
            want.usage["prompt_tokens"], want.usage["completion_tokens"], want.usage["total_tokens"]), u
        assert (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) == want.usage["cached_tokens"], u
        assert (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) == \
            want.usage["reasoning_tokens"], u


def check_error_message(error: dict[str, Any], want: Failure) -> None:
    message = error["error"]["message"]
    for word in want.words:
        assert word in message, f"{word!r} not in the error message {message!r}"
    if want.code is not None:
        assert error["error"]["code"] == want.code, error


def check_openai(res: Result, want: Answer | Failure, mode: str) -> Got | None:
    """Check a chat result against the expectation; the answer, when there is one."""
    if isinstance(want, Failure):
        if res.sse is not None:  # the stream had started: the error arrives as its last event
            assert res.status == 200
            _, error = from_chunks(res.sse, expect_error=True)
            assert error is not None
            check_error_message(error, want)
            return None
        assert res.status >= 400, f"expected an error, got {res.status}: {res.json}"
        if want.status is not None:
            assert res.status == want.status, res.json
        validate("ErrorResponse", res.json)
        check_error_message(res.json, want)
        if res.status == 429:
            assert res.headers.get("retry-after"), "a 429 without Retry-After"
        return None
    assert res.status == 200, f"expected an answer, got {res.status}: {res.json}"
    if mode == "openai":
        assert res.json is not None, "a non-streaming request got an event stream"
        got = from_completion(res.json)
    else:
        assert res.sse is not None, f"a streaming request got {res.json}"
        got, error = from_chunks(res.sse, expect_error=want.stream_error is not None)
        if want.stream_error is not None:
            assert error is not None and want.stream_error in error["error"]["message"], error
    check_answer(got, want, whole=mode == "openai")
    return got


# -- the tests ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rec", "mode"), cases(all_modes))
def test_replay(start_keyloom: Callable[..., Running], fake: FakeGemini, rec: Recording, mode: str) -> None:
    kl = start(start_keyloom, mode)
    serve(fake, rec)
    if mode in OPENAI_MODES:
        check_openai(chat(kl, chat_body(rec, mode)), expect(rec), mode)
        wanted = "streamGenerateContent" if mode == "openai-real-stream" else "generateContent"
        assert {c.action for c in fake.generate_calls()} == {wanted}
    else:
        replay_gemini(kl, fake, rec, mode)


def replay_gemini(kl: Running, fake: FakeGemini, rec: Recording, mode: str) -> None:
    """The Gemini API routes pass Gemini's answer on as it is: the same reply, the same events. An error
    keeps Gemini's shape (README, "Beyond chat") and the status of `error_status`."""
    model = model_for(rec)
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    path = f"/v1beta/models/{model}:" + ("generateContent" if mode == "gemini-generate"
                                         else "streamGenerateContent?alt=sse")
    with httpx.Client(base_url=kl.url, timeout=30.0) as h:
        r = h.post(path, headers={"x-goog-api-key": PASSWORD}, json=body)
    if rec.status != 200:
        assert rec.body is not None
        assert r.status_code == error_status(rec.status, rec.body), r.text
        error = r.json()["error"]
        assert error["code"] == r.status_code and isinstance(error.get("status"), str), error
        assert rec.body["error"]["message"] in error["message"], error
        return
    assert r.status_code == 200, r.text
    if mode == "gemini-generate":
        assert r.json() == rec.body
    else:
        assert r.headers["content-type"].startswith("text/event-stream")
        want = [json.loads(e) if isinstance(e, str) else e for e in rec.as_events()]
        assert parse_gemini_sse(r.text) == want
    # Retrying an empty or filtered reply with another key is allowed (README: retries apply as for chat),
    # as long as what reaches the client is Gemini's own answer.
    assert {c.action for c in fake.generate_calls()} == {path.split(":")[1].split("?")[0]}


def tool_cases(rec: Recording) -> tuple[str, ...]:
    want = expect(rec)
    if not isinstance(want, Answer) or not want.calls:
        return ()
    return ("openai-real-stream",) if rec.stream else ("openai", "openai-real-stream")


@pytest.mark.parametrize(("rec", "mode"), cases(tool_cases))
def test_tool_call_round_trip(start_keyloom: Callable[..., Running], fake: FakeGemini, rec: Recording,
                              mode: str) -> None:
    """The answer's tool calls go back as the assistant's turn, with a result for each. Upstream, that turn
    must be the model's function calls again, with their thought signatures (Gemini 3 refuses calls without
    them) and their `id`s (Gemini 3 pairs calls and results by id), and each result must carry its call's
    `id`."""
    want = expect(rec)
    assert isinstance(want, Answer)
    kl = start(start_keyloom, mode)
    serve(fake, rec)
    got = check_openai(chat(kl, chat_body(rec, mode)), want, mode)
    assert got is not None
    fake.responder = None  # the next turn gets the fake's ordinary text answer
    fake.requests.clear()
    assistant = {"role": "assistant", "content": got.content or None,
                 "tool_calls": [{"id": c["id"], "type": "function", "function": c["function"]} for c in got.calls]}
    results = [{"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"result": n})}
               for n, c in enumerate(got.calls)]
    res = chat(kl, chat_body(rec, mode, HELLO + [assistant] + results))
    assert res.status == 200, res.json
    [call] = fake.generate_calls()
    contents = call.body["contents"]
    turn = next(c for c in contents if any("functionCall" in p for p in c.get("parts", ())))
    assert turn["role"] == "model"
    sent = [p for p in turn["parts"] if "functionCall" in p]
    assert len(sent) == len(want.calls)
    for part, w in zip(sent, want.calls, strict=True):
        assert part["functionCall"]["name"] == w.name
        assert part["functionCall"].get("args") == w.args
        if w.signature:
            assert part.get("thoughtSignature") == w.signature, "the thought signature did not come back"
        else:
            assert part.get("thoughtSignature") in (None, PLACEHOLDER_SIGNATURE), part
        if w.id:
            assert part["functionCall"].get("id") == w.id, "the function call's id did not come back"
    answers = [p["functionResponse"] for c in contents[contents.index(turn) + 1:] for p in c.get("parts", ())
               if "functionResponse" in p]
    assert [a["name"] for a in answers] == [w.name for w in want.calls]
    for a, w in zip(answers, want.calls, strict=True):
        if w.id:
            assert a.get("id") == w.id, "the function response does not carry its call's id"


def test_the_corpus_covers_what_issue_13_asks_for() -> None:
    """At least 30 recordings, each named in SOURCES.md, and every category of the issue represented."""
    assert len(RECORDINGS) >= 30
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    for r in RECORDINGS:
        assert f"`{r.name}`" in sources, f"{r.name} has no entry in SOURCES.md"

    def parts(r: Recording) -> Iterator[dict[str, Any]]:
        reply, _ = merged(r.as_events()) if r.status == 200 else ({}, None)
        for c in reply.get("candidates") or ():
            yield from (c.get("content") or {}).get("parts") or ()

    def has(test: Callable[[Recording], bool]) -> bool:
        return any(test(r) for r in RECORDINGS)

    usage = [merged(r.as_events())[0].get("usageMetadata") or {} for r in RECORDINGS if r.status == 200]
    assert has(lambda r: any(p.get("thought") for p in parts(r)))
    assert has(lambda r: any("functionCall" in p and p.get("thoughtSignature") for p in parts(r)))
    assert has(lambda r: any(p.get("functionCall", {}).get("id") for p in parts(r)))
    assert has(lambda r: any("executableCode" in p for p in parts(r)))
    assert has(lambda r: any("inlineData" in p for p in parts(r)))
    assert has(lambda r: bool(r.body and r.body.get("candidates", [{}])[0].get("groundingMetadata")))
    assert any("cachedContentTokenCount" in u for u in usage) and any("thoughtsTokenCount" in u for u in usage)
    assert has(lambda r: bool(r.body and (r.body.get("promptFeedback") or {}).get("blockReason")))
    assert {429, 503} <= {r.status for r in RECORDINGS}
    assert has(lambda r: r.stream and sum(isinstance(e, dict) and any(c.get("finishReason") for c in
                                                                        e.get("candidates") or ())
                                          for e in r.as_events()) > 1)
    assert has(lambda r: r.stream and any(isinstance(e, str) for e in r.as_events()))
