"""Gemini → OpenAI reply translation; every object validated against the OpenAI spec's schemas."""
from __future__ import annotations

import itertools
import json

import pytest

from server.translate.gemini_to_openai import ChunkStream, completion, finish_reason, usage
from server.translate.openai_to_gemini import split_tool_call_id
from tests.fake_gemini import function_call_reply, stream_events, text_reply
from tests.support.openai_schema import validate


def ids():
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


def test_text_reply_with_thoughts():
    reply = text_reply("Hello!", thought="**Planning** say hi", thoughts_tokens=17, prompt_tokens=3)
    out = completion(reply, model="gemini-2.5-flash", created=1700000000, new_id=ids())
    validate("CreateChatCompletionResponse", out)
    assert out["id"] == "chatcmpl-fakeResponseId"
    assert out["object"] == "chat.completion" and out["model"] == "gemini-2.5-flash" and out["created"] == 1700000000
    msg = out["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": "Hello!", "refusal": None,
                   "reasoning_content": "**Planning** say hi"}
    assert out["choices"][0]["finish_reason"] == "stop" and out["choices"][0]["logprobs"] is None
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 18, "total_tokens": 21,
                            "prompt_tokens_details": {"cached_tokens": 0},
                            "completion_tokens_details": {"reasoning_tokens": 17}}


def test_usage_matches_the_reference_capture():
    u = usage({"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 22, "thoughtsTokenCount": 17,
               "cachedContentTokenCount": 1, "toolUsePromptTokenCount": 4})
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (7, 19, 26)
    assert u["completion_tokens_details"]["reasoning_tokens"] == 17
    assert u["prompt_tokens_details"]["cached_tokens"] == 1
    assert usage(None) is None


def test_function_call_reply_becomes_tool_calls_with_generated_ids():
    reply = function_call_reply("getWeather", {"location": "Tokyo"}, signature="CikBcsjaf")
    out = completion(reply, model="m", created=1, new_id=ids())
    validate("CreateChatCompletionResponse", out)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "getWeather", "arguments": json.dumps({"location": "Tokyo"},
                                                                              separators=(",", ":"))}
    assert split_tool_call_id(call["id"]) == ("call_id1", "CikBcsjaf")


@pytest.mark.parametrize("gemini, has_calls, openai", [
    ("STOP", False, "stop"), ("MAX_TOKENS", False, "length"), ("SAFETY", False, "content_filter"),
    ("RECITATION", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"),
    ("BLOCKLIST", False, "content_filter"), ("SPII", False, "content_filter"), ("IMAGE_SAFETY", False,
                                                                                 "content_filter"),
    ("STOP", True, "tool_calls"), (None, False, "stop"), ("FINISH_REASON_UNSPECIFIED", True, "tool_calls"),
])
def test_finish_reason_mapping(gemini, has_calls, openai):
    assert finish_reason(gemini, has_calls) == openai


@pytest.mark.parametrize("gemini", ["OTHER", "MALFORMED_FUNCTION_CALL", "NO_IMAGE", "UNEXPECTED_TOOL_CALL",
                                    "TOO_MANY_TOOL_CALLS", "IMAGE_OTHER", "A_REASON_FROM_2027"])
def test_a_reply_that_went_wrong_never_maps_to_a_finish_reason(gemini):
    with pytest.raises(ValueError):
        finish_reason(gemini, False)


def test_multiple_candidates_become_choices_and_missing_index_is_zero():
    reply = {"candidates": [{"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "STOP"},
                            {"content": {"parts": [{"text": "B"}], "role": "model"}, "finishReason": "MAX_TOKENS",
                             "index": 1}]}
    out = completion(reply, model="m", created=1, new_id=ids())
    validate("CreateChatCompletionResponse", out)
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "A", "stop"), (1, "B", "length")]
    assert "usage" not in out and out["id"] == "chatcmpl-id1"


def test_code_execution_parts_are_shown_as_code():
    reply = {"candidates": [{"content": {"parts": [
        {"executableCode": {"language": "PYTHON", "code": "print(1)"}},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1"}}, {"text": "Done"}]}, "finishReason": "STOP"}]}
    content = completion(reply, model="m", created=1)["choices"][0]["message"]["content"]
    assert "```python\nprint(1)\n```" in content and "```\n1\n```" in content and content.endswith("Done")


def collect(events, **kw):
    cs = ChunkStream(model="gemini-2.5-flash", created=1700000000, new_id=ids(), **kw)
    chunks = [c for e in events for c in cs.feed(e)] + cs.finish()
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    return chunks, cs


def test_stream_chunks_follow_openai_sequence():
    events = stream_events(text_reply("one two three four five six", thought="hmm", thoughts_tokens=3), pieces=3)
    chunks, cs = collect(events)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] == "chatcmpl-fakeResponseId"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:])
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
    assert text == "one two three four five six" and reasoning == "hmm"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all("usage" not in c for c in chunks)
    assert cs.finished


def test_stream_usage_chunk_when_asked():
    events = stream_events(text_reply("a b c", thoughts_tokens=2), pieces=3)
    chunks, _ = collect(events, include_usage=True)
    assert all(c["usage"] is None for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3 + 2
    assert last["usage"]["total_tokens"] == 10 + 5


def test_stream_tool_call_chunk_has_index_id_name_and_whole_arguments():
    chunks, _ = collect(stream_events(function_call_reply("getWeather", {"location": "Tokyo"})))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    [call] = next(d["tool_calls"] for d in deltas if "tool_calls" in d)
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"location": "Tokyo"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_second_tool_call_gets_next_index():
    ev1 = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "a", "args": {}}}]}, "index": 0}]}
    ev2 = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "b", "args": {"x": 1}}}]},
                           "finishReason": "STOP", "index": 0}]}
    chunks, _ = collect([ev1, ev2])
    indexes = [t["index"] for c in chunks for t in c["choices"][0]["delta"].get("tool_calls", []) if c["choices"]]
    assert indexes == [0, 1]


def test_stream_without_finish_reason_is_closed_by_finish():
    cs = ChunkStream(model="m", created=1, new_id=ids())
    fed = cs.feed({"candidates": [{"content": {"parts": [{"text": "partial"}]}, "index": 0}]})
    assert not cs.finished and all(c["choices"][0]["finish_reason"] is None for c in fed)
    closing = cs.finish()
    assert cs.finished and closing[-1]["choices"][0]["finish_reason"] == "stop"  # the choice Gemini left open


def test_stream_interleaves_candidates_by_index():
    ev = {"candidates": [{"content": {"parts": [{"text": "A"}]}, "index": 0, "finishReason": "STOP"},
                         {"content": {"parts": [{"text": "B"}]}, "index": 1, "finishReason": "STOP"}]}
    chunks, _ = collect([ev])
    by_index: dict[int, str] = {}
    for c in chunks:
        for ch in c["choices"]:
            by_index[ch["index"]] = by_index.get(ch["index"], "") + (ch["delta"].get("content") or "")
    assert by_index == {0: "A", 1: "B"}
