"""Anthropic Messages ⇄ Gemini translation: requests, replies, streams, and a tool loop's round trip.

Every message and stream event is checked against the official `anthropic` SDK's types, and every stream is
folded by the SDK's own accumulator into the message `message()` gives for the same reply.
"""
from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from server.signatures import unseal_body
from server.translate.anthropic_to_gemini import (
    build_request,
    count_tokens_request,
    remote_image_urls,
)
from server.translate.gemini_body import DUMMY_SIGNATURE, Extras, TranslationError
from server.translate.gemini_to_anthropic import (
    MessageStream,
    error_body,
    message,
    stop_reason,
    tool_use_id,
)
from server.translate.openai_to_gemini import gemini_call_id, split_tool_call_id
from server.translate.traits import traits_for

DATA = Path(__file__).parent / "data" / "anthropic"
FLASH = traits_for("gemini-2.5-flash")
PRO = traits_for("gemini-2.5-pro")
G3 = traits_for("gemini-3-pro-preview")
G3_FLASH = traits_for("gemini-3-flash-preview")
OLD = traits_for("gemini-2.0-flash")
GEMMA = traits_for("gemma-3-27b-it")
FP = "0123456789ab"  # a key fingerprint
EVENTS = TypeAdapter(RawMessageStreamEvent)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg=="


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def req(*messages: Any, **fields: Any) -> dict[str, Any]:
    return {"model": "gemini-2.5-flash", "max_tokens": 1024, "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"r{next(counter)}"


# -- requests: what Claude Code sent -------------------------------------------------------------

def test_claude_code_tool_loop_request_translates_whole():
    body = build_request(recorded("claude-code-2.1.332-gemini-2.5-pro-002.json")["body"], PRO)
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    system = [p["text"] for p in body["systemInstruction"]["parts"]]
    # The billing marker is dropped; the system prompt blocks, then the role:"system" message, in order.
    assert system[0] == "You are a Claude agent, built on Anthropic's Claude Agent SDK."
    assert system[-1].startswith("# Environment") and len(system) == 3
    assert not any(t.startswith("x-anthropic-billing-header") for t in system)
    model = body["contents"][1]["parts"]
    assert model[0] == {"text": "I should list the files.", "thought": True,
                        "thoughtSignature": "EqQBCgIYAhIMfakeSignaturevwl1vvdw3a5624g5"}
    assert model[1] == {"text": "I'll list the files."}
    assert model[2]["functionCall"]["name"] == "Bash"
    response = body["contents"][2]["parts"][0]["functionResponse"]
    assert response["name"] == "Bash" and response["response"]["content"].startswith("total 16")
    names = [d["name"] for d in body["tools"][0]["functionDeclarations"]]
    assert "Bash" in names and "DeferredToolPlaceholder" in names and len(names) == 12
    assert "$schema" not in json.dumps(body["tools"]) and "additionalProperties" not in json.dumps(body["tools"])
    # adaptive + effort high + display omitted: the effort's budget, no thought summaries.
    assert body["generationConfig"] == {"maxOutputTokens": 32000, "thinkingConfig": {"thinkingBudget": 24576}}
    assert "toolConfig" not in body


def test_claude_code_first_request_with_a_system_message_as_blocks():
    body = build_request(recorded("claude-code-2.1.332-gemini-2.5-pro-001.json")["body"], G3)
    assert [c["role"] for c in body["contents"]] == ["user"]
    assert body["systemInstruction"]["parts"][-1]["text"].startswith("# Environment")
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "HIGH"}


def test_full_reference_request():
    body = build_request(recorded("an-request-full.json"), FLASH)
    first, model, result = body["contents"]
    assert first["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert first["parts"][2:] == [{"text": "note"}, {"text": "Taken in Paris."}]  # title, then the document
    # redacted_thinking is dropped; the thinking block keeps its signature on its thought part.
    assert [list(p) for p in model["parts"]] == [["text", "thought", "thoughtSignature"], ["functionCall"]]
    assert result["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"content": {"temp_c": 21}}}}]
    assert body["tools"][1] == {"googleSearch": {}}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert body["generationConfig"] == {"temperature": 1, "topP": 0.95, "topK": 40, "maxOutputTokens": 4096,
                                        "stopSequences": ["\n\nHuman:"],
                                        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048}}


# -- requests: system ----------------------------------------------------------------------------

def test_system_string_blocks_and_system_messages_in_order():
    body = build_request(req(user("a"), {"role": "system", "content": "mid"}, user("b"),
                             {"role": "system", "content": [{"type": "text", "text": "late"}]},
                             user([{"type": "mid_conv_system", "content": [{"type": "text", "text": "block"}]}]),
                             system=[{"type": "text", "text": "top", "cache_control": {"type": "ephemeral"}}]),
                         FLASH)
    assert body["systemInstruction"] == {"parts": [{"text": "top"}, {"text": "mid"}, {"text": "late"},
                                                   {"text": "block"}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]  # merged


def test_system_string():
    assert build_request(req(user("hi"), system="Be brief."), FLASH)["systemInstruction"] == \
        {"parts": [{"text": "Be brief."}]}


def test_gemma_gets_the_system_text_in_the_first_user_turn():
    body = build_request(req(user("hi"), system="Be brief."), GEMMA)
    assert "systemInstruction" not in body
    assert body["contents"][0]["parts"] == [{"text": "Be brief."}, {"text": "hi"}]


def test_only_system_text_becomes_the_user_turn():
    body = build_request(req({"role": "system", "content": "Say hi."}), FLASH)
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Say hi."}]}]


# -- requests: images, documents -------------------------------------------------------------------

def test_images_base64_and_fetched_urls():
    url = "https://example.com/a.png"
    body = build_request(req(user([{"type": "image", "source": {"type": "url", "url": url}},
                                   {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                "data": PNG}}])),
                         FLASH, images={url: ("image/jpeg", "AAAA")})
    assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
                                            {"inlineData": {"mimeType": "image/png", "data": PNG}}]


def test_an_image_url_not_fetched_is_refused_with_its_param():
    with pytest.raises(TranslationError) as e:
        build_request(req(user([{"type": "text", "text": "x"},
                                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}])), FLASH)
    assert e.value.param == "messages.0.content.1.source.url"


def test_remote_image_urls_in_order_deduplicated_tool_results_included():
    request = req(user([{"type": "image", "source": {"type": "url", "url": "https://b/1.png"}},
                        {"type": "image", "source": {"type": "url", "url": "https://a/2.png"}},
                        {"type": "image", "source": {"type": "url", "url": "https://b/1.png"}},
                        {"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}},
                        {"type": "tool_result", "tool_use_id": "t",
                         "content": [{"type": "image", "source": {"type": "url", "url": "https://c/3.png"}}]}]))
    assert remote_image_urls(request) == ["https://b/1.png", "https://a/2.png", "https://c/3.png"]


@pytest.mark.parametrize("odd", [None, 1, [], {"messages": None}, {"messages": [None, 1, {"content": 5}]},
                                 {"messages": [{"content": [None, {"type": "image", "source": 3}]}]}])
def test_remote_image_urls_never_raise(odd):
    assert remote_image_urls(odd) == []


def test_documents_pdf_text_and_content():
    body = build_request(req(user([
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}},
    ])), FLASH)
    assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                                            {"text": "plain"}, {"text": "inner"}]


def test_a_document_by_url_is_refused():
    with pytest.raises(TranslationError) as e:
        build_request(req(user([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}])),
                      FLASH)
    assert e.value.param == "messages.0.content.0.source.type"


# -- requests: tools in the history ---------------------------------------------------------------

def tool_history(result: dict[str, Any], call_id: str = "toolu_1") -> list[dict[str, Any]]:
    return [user("weather?"),
            assistant([{"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Paris"}}]),
            user([{"type": "tool_result", "tool_use_id": call_id, **result}, {"type": "text", "text": "thanks"}])]


def test_tool_result_string_list_with_image_and_error():
    body = build_request(req(*tool_history({"content": "21C"})), FLASH)
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": "21C"}}}, {"text": "thanks"}]
    body = build_request(req(*tool_history({"content": [
        {"type": "text", "text": "{\"t\": 21}"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]})), FLASH)
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": {"t": 21}}}},
        {"inlineData": {"mimeType": "image/png", "data": PNG}}, {"text": "thanks"}]
    body = build_request(req(*tool_history({"content": "boom", "is_error": True})), FLASH)
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {"error": "boom"}


def test_tool_result_without_its_tool_use_is_refused():
    messages = tool_history({"content": "x"})
    messages[2]["content"][0]["tool_use_id"] = "toolu_other"
    with pytest.raises(TranslationError) as e:
        build_request(req(*messages), FLASH)
    assert e.value.param == "messages.2.content.0.tool_use_id"
    assert "tool_use" in e.value.message


def test_tool_use_without_signature_gets_the_placeholder_on_gemini_3_only():
    assert build_request(req(*tool_history({"content": "x"})), G3)["contents"][1]["parts"][0][
        "thoughtSignature"] == DUMMY_SIGNATURE
    assert "thoughtSignature" not in build_request(req(*tool_history({"content": "x"})), FLASH)["contents"][1][
        "parts"][0]


def test_server_tool_blocks_and_redacted_thinking_are_skipped():
    body = build_request(req(user("q"), assistant([
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "text", "text": "answer"}])), FLASH)
    assert body["contents"][1] == {"role": "model", "parts": [{"text": "answer"}]}


# -- requests: thinking blocks and their signatures -----------------------------------------------

@pytest.mark.parametrize("blocks, parts", [
    # a signed thought goes back as the thought part it was
    ([{"type": "thinking", "thinking": "T", "signature": "S"}, {"type": "text", "text": "A"}],
     [{"text": "T", "thought": True, "thoughtSignature": "S"}, {"text": "A"}]),
    # an answer part's signature before its text (Gemini 2.5) goes on that text
    ([{"type": "thinking", "thinking": "T", "signature": ""}, {"type": "thinking", "thinking": "", "signature": "S"},
      {"type": "text", "text": "A"}],
     [{"text": "T", "thought": True}, {"text": "A", "thoughtSignature": "S"}]),
    # after its text (Gemini 3 signs the last part) it goes on the text before it
    ([{"type": "text", "text": "A"}, {"type": "thinking", "thinking": "", "signature": "S"}],
     [{"text": "A", "thoughtSignature": "S"}]),
    # before a tool_use without a signature of its own (another proxy's scheme): on the call
    ([{"type": "thinking", "thinking": "", "signature": "S"},
      {"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}}],
     [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "S"}]),
    # nowhere to go: dropped
    ([{"type": "thinking", "thinking": "", "signature": "S"}], []),
])
def test_thinking_block_signatures_go_back_on_their_parts(blocks, parts):
    body = build_request(req(user("q"), assistant(blocks), user("next")), FLASH)
    model = [c for c in body["contents"] if c["role"] == "model"]
    assert (model[0]["parts"] if model else []) == parts


# -- requests: parameters -------------------------------------------------------------------------

@pytest.mark.parametrize("traits, thinking, extra, expected", [
    (FLASH, {"type": "enabled", "budget_tokens": 2048}, {}, {"includeThoughts": True, "thinkingBudget": 2048}),
    (PRO, {"type": "enabled", "budget_tokens": 100000}, {}, {"includeThoughts": True, "thinkingBudget": 32768}),
    (G3, {"type": "enabled", "budget_tokens": 1024}, {}, {"includeThoughts": True, "thinkingLevel": "LOW"}),
    (FLASH, {"type": "adaptive"}, {}, {"includeThoughts": True}),
    (G3_FLASH, {"type": "adaptive"}, {"output_config": {"effort": "medium"}},
     {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
    (FLASH, {"type": "adaptive", "display": "omitted"}, {}, None),
    (FLASH, {"type": "disabled"}, {}, {"thinkingBudget": 0}),
    (PRO, {"type": "disabled"}, {}, {"thinkingBudget": 128}),  # Pro cannot stop thinking
    (G3, {"type": "disabled"}, {}, {"thinkingLevel": "LOW"}),
    (FLASH, None, {}, None),  # not asked: the model's default, without summaries
    (OLD, {"type": "enabled", "budget_tokens": 2048}, {}, None),  # a model that does not think
])
def test_thinking_per_model_family(traits, thinking, extra, expected):
    request = req(user("q"), **extra) | ({"thinking": thinking} if thinking else {})
    config = build_request(request, traits).get("generationConfig", {})
    assert config.get("thinkingConfig") == expected


def test_model_suffix_thinking_overrides_the_client():
    body = build_request(req(user("q"), thinking={"type": "adaptive"}), FLASH, extras=Extras(thinking="none"))
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}


def test_stop_sequences_beyond_five_are_cut_and_max_tokens_is_optional():
    request = req(user("q"), stop_sequences=["1", "", "2", "3", "4", "5", "6"])
    del request["max_tokens"]
    config = build_request(request, FLASH)["generationConfig"]
    assert config == {"stopSequences": ["1", "2", "3", "4", "5"]}


def test_output_format_json_schema():
    config = build_request(req(user("q"), output_config={"format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}}}),
        OLD)["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["properties"] == {"a": {"type": "string"}}


def test_ignored_fields_are_accepted():
    body = build_request(req(user("q"), metadata={"user_id": "{\"x\":1}"}, service_tier="auto", container="c",
                             mcp_servers=[], context_management={"edits": []}, stream=True,
                             cache_control={"type": "ephemeral"}), OLD)
    assert body["generationConfig"] == {"maxOutputTokens": 1024}


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto", "disable_parallel_tool_use": True}, {"mode": "AUTO"}),
    ({"type": "any"}, {"mode": "ANY"}),
    ({"type": "tool", "name": "get_weather"}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ({"type": "none"}, {"mode": "NONE"}),
])
def test_tool_choice(choice, expected):
    body = build_request(req(user("q"), tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
                             tool_choice=choice), FLASH)
    assert body["toolConfig"] == {"functionCallingConfig": expected}
    assert body["tools"] == [{"functionDeclarations": [{"name": "get_weather"}]}]


def test_server_tools_web_search_becomes_google_search_others_dropped():
    body = build_request(req(user("q"), tools=[{"type": "web_search_20250305", "name": "web_search"},
                                               {"type": "bash_20250124", "name": "bash"},
                                               {"type": "code_execution_20250825", "name": "code_execution"}],
                             tool_choice={"type": "auto"}), FLASH)
    assert body["tools"] == [{"googleSearch": {}}]
    assert "toolConfig" not in body


# -- requests: what a client must not be able to do ------------------------------------------------

@pytest.mark.parametrize("request_, param", [
    (req(), "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    (req(None), "messages.0"),
    (req({"role": "tool", "content": "x"}), "messages.0.role"),
    (req(user(5)), "messages.0.content"),
    (req(user([[{"type": "text", "text": "x"}]])), "messages.0.content.0"),
    (req(user([{"type": "text", "text": None}])), "messages.0.content.0.text"),
    (req(user([{"type": "video", "url": "x"}])), "messages.0.content.0.type"),
    (req(user([{"type": ["text"]}])), "messages.0.content.0.type"),
    (req(user([{"type": "image", "source": None}])), "messages.0.content.0.source"),
    (req(user([{"type": "image", "source": {"type": "file", "file_id": "f"}}])), "messages.0.content.0.source.type"),
    (req(user([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": 5}}])),
     "messages.0.content.0.source.data"),
    (req(user([{"type": "tool_use", "id": "t", "name": "f", "input": {}}])), "messages.0.content.0.type"),
    (req(assistant([{"type": "tool_use", "id": "t", "name": "f", "input": [1]}])), "messages.0.content.0.input"),
    (req(assistant([{"type": "tool_use", "id": 7, "name": "f"}])), "messages.0.content.0.id"),
    (req(assistant([{"type": "tool_result", "tool_use_id": "t"}])), "messages.0.content.0.type"),
    (req(user([{"type": "tool_result", "tool_use_id": None}])), "messages.0.content.0.tool_use_id"),
    (req(user("q"), system=5), "system"),
    (req(user("q"), system=[{"type": "image"}]), "system.0"),
    (req(user("q"), max_tokens="many"), "max_tokens"),
    (req(user("q"), max_tokens=0), "max_tokens"),
    (req(user("q"), temperature=3), "temperature"),
    (req(user("q"), stop_sequences="END"), "stop_sequences"),
    (req(user("q"), thinking={"type": "enabled"}), "thinking.budget_tokens"),
    (req(user("q"), thinking={"type": "sometimes"}), "thinking.type"),
    (req(user("q"), thinking=[]), "thinking"),
    (req(user("q"), output_config={"effort": "extreme"}), "output_config.effort"),
    (req(user("q"), tools={"name": "f"}), "tools"),
    (req(user("q"), tools=[{"name": None}]), "tools.0.name"),
    (req(user("q"), tools=[{"name": "f", "input_schema": "object"}]), "tools.0.input_schema"),
    (req(user("q"), tools=[{"type": 5}]), "tools.0.type"),
    (req(user("q"), tool_choice={"type": ["any"]}), "tool_choice.type"),
    (req(user("q"), tool_choice={"type": "tool"}), "tool_choice.name"),
])
def test_bad_input_is_a_translation_error_naming_the_param(request_, param):
    with pytest.raises(TranslationError) as e:
        build_request(request_, FLASH)
    assert e.value.param == param
    assert param in e.value.message


ODD: list[Any] = [None, 0, 1.5, True, "", "x", [], [None], [[1]], {}, {"type": None}, {"type": "text"}, {"type": {}}]


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*path, i)))
    return out


def test_any_odd_value_anywhere_in_a_full_request_raises_only_translation_errors():
    """Replace every value of the reference request, one at a time, by each odd shape: the translators
    either translate or raise TranslationError, nothing else."""
    base = recorded("an-request-full.json")
    tried = 0
    for path in _paths(base)[1:]:
        for odd in ODD:
            request = copy.deepcopy(base)
            target = request
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(odd)
            for translate in (lambda r: build_request(r, G3), lambda r: count_tokens_request(r, FLASH),
                              remote_image_urls):
                try:
                    translate(request)
                except TranslationError:
                    pass
                tried += 1
    assert tried > 1000


def test_a_request_that_is_not_an_object():
    odd: Any
    for odd in (None, [], "x"):
        with pytest.raises(TranslationError):
            build_request(odd, FLASH)


# -- count_tokens ---------------------------------------------------------------------------------

def test_count_tokens_request_wraps_a_generate_content_request_with_the_model():
    body = count_tokens_request({"model": "gemini-2.5-flash", "system": "Be terse.",
                                 "messages": [user("Hello")],
                                 "tools": [{"name": "f", "input_schema": {"type": "object"}}]}, FLASH)
    assert body == {"generateContentRequest": {
        "model": "models/gemini-2.5-flash", "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "systemInstruction": {"parts": [{"text": "Be terse."}]}, "tools": [{"functionDeclarations": [{"name": "f"}]}]}}
    assert count_tokens_request({"model": "models/x", "messages": [user("a")]}, FLASH)[
        "generateContentRequest"]["model"] == "models/x"
    with pytest.raises(TranslationError) as e:
        count_tokens_request({"messages": [user("a")]}, FLASH)
    assert e.value.param == "model"


# -- replies --------------------------------------------------------------------------------------

def reply(*parts: dict[str, Any], finish: str | None = "STOP", **meta: int) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15} | meta
    return {"candidates": [cand], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash"}


def whole(gemini: dict[str, Any], key_fp: str | None = FP) -> dict[str, Any]:
    msg = message(gemini, model="claude-x", message_id="msg_1", key_fp=key_fp, new_id=ids())
    Message.model_validate(msg)
    return msg


def streamed(*events: dict[str, Any], key_fp: str | None = FP) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """→ (the stream events, validated, and what the SDK's accumulator makes of them)."""
    stream = MessageStream(model="claude-x", message_id="msg_1", new_id=ids())
    stream.key_fp = key_fp
    out = stream.start()
    for event in events:
        out.extend(stream.feed(event))
    out.extend(stream.finish())
    snapshot = None
    bufs: dict[int, bytes] = {}
    for event in out:
        snapshot = accumulate_event(event=EVENTS.validate_python(event), current_snapshot=snapshot,
                                    json_bufs=bufs)
    assert snapshot is not None
    return out, snapshot.to_dict()


def check_sequence(events: list[dict[str, Any]]) -> None:
    """The order Anthropic's streams keep: message_start; blocks one at a time at indexes 0, 1, …, each
    start → deltas → stop, a signature_delta only right before its block's stop; message_delta; message_stop."""
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "message_delta" not in kinds[:-2] and "message_start" not in kinds[1:]
    open_index, next_index = None, 0
    for i, e in enumerate(events[1:-2], 1):
        if e["type"] == "content_block_start":
            assert open_index is None and e["index"] == next_index
            open_index, next_index = e["index"], next_index + 1
        elif e["type"] == "content_block_delta":
            assert e["index"] == open_index
            if e["delta"]["type"] == "signature_delta":
                assert events[i + 1] == {"type": "content_block_stop", "index": open_index}
        else:
            assert e == {"type": "content_block_stop", "index": open_index}
            open_index = None
    assert open_index is None


def same_message(msg: dict[str, Any], snapshot: dict[str, Any]) -> None:
    """The same message, up to fields left null (the accumulator sets `stop_details: None` itself)."""
    assert Message.model_validate(snapshot).to_dict(exclude_none=True) == \
        Message.model_validate(msg).to_dict(exclude_none=True)


def test_text_reply():
    msg = whole(reply({"text": "Hello! How can I help?"}))
    assert msg["content"] == [{"type": "text", "text": "Hello! How can I help?"}]
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None
    assert msg["id"] == "msg_1" and msg["model"] == "claude-x"


def test_thoughts_become_thinking_blocks_with_sealed_signatures():
    msg = whole(reply({"text": "Let me ", "thought": True}, {"text": "think.", "thought": True,
                                                            "thoughtSignature": "TSIG"}, {"text": "42"}))
    assert msg["content"] == [{"type": "thinking", "thinking": "Let me think.", "signature": f"{FP}.TSIG"},
                              {"type": "text", "text": "42"}]


def test_an_answer_signature_becomes_an_empty_thinking_block_before_its_text():
    msg = whole(reply({"text": "plan", "thought": True}, {"text": "42", "thoughtSignature": "ASIG"}))
    assert msg["content"] == [{"type": "thinking", "thinking": "plan", "signature": ""},
                              {"type": "thinking", "thinking": "", "signature": f"{FP}.ASIG"},
                              {"type": "text", "text": "42"}]


def test_two_tool_calls():
    msg = whole(reply({"text": "Checking."},
                      {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "g1"},
                       "thoughtSignature": "FSIG"},
                      {"functionCall": {"name": "get_time", "args": {}}}))
    assert msg["stop_reason"] == "tool_use"
    text, first, second = msg["content"]
    assert text == {"type": "text", "text": "Checking."}
    assert first["name"] == "get_weather" and first["input"] == {"city": "Paris"}
    assert first["id"].startswith("toolu_") and split_tool_call_id(first["id"])[1] == f"{FP}.FSIG"
    assert gemini_call_id(first["id"]) == "g1"
    assert second["input"] == {} and split_tool_call_id(second["id"])[1] is None
    assert first["id"] != second["id"]


@pytest.mark.parametrize("finish, tools, expected", [
    ("STOP", False, "end_turn"), ("STOP", True, "tool_use"), (None, False, "end_turn"),
    ("MAX_TOKENS", False, "max_tokens"), ("MAX_TOKENS", True, "max_tokens"), ("SAFETY", False, "refusal"),
    ("RECITATION", False, "refusal"), ("PROHIBITED_CONTENT", True, "refusal"),
])
def test_stop_reason(finish, tools, expected):
    assert stop_reason(finish, tools) == expected


def test_an_abnormal_finish_is_not_a_stop_reason():
    with pytest.raises(ValueError):
        stop_reason("MALFORMED_FUNCTION_CALL", False)


def test_max_tokens_and_safety_replies():
    assert whole(reply({"text": "cut"}, finish="MAX_TOKENS"))["stop_reason"] == "max_tokens"
    msg = whole(reply(finish="SAFETY"))
    assert msg["stop_reason"] == "refusal" and msg["content"] == []
    assert msg["stop_details"]["type"] == "refusal" and "SAFETY" in msg["stop_details"]["explanation"]
    blocked = whole({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    assert blocked["stop_reason"] == "refusal"


def test_usage_with_cache_and_thoughts():
    msg = whole(reply({"text": "x"}, promptTokenCount=1000, cachedContentTokenCount=800, candidatesTokenCount=20,
                      thoughtsTokenCount=30))
    assert msg["usage"] == {"input_tokens": 200, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 800,
                            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                            "output_tokens": 50, "output_tokens_details": {"thinking_tokens": 30},
                            "service_tier": "standard"}


def test_grounding_sources_are_appended_as_text():
    gemini = reply({"text": "It is sunny."})
    gemini["candidates"][0]["groundingMetadata"] = {"groundingChunks": [
        {"web": {"uri": "https://w.example/paris", "title": "Weather"}}]}
    msg = whole(gemini)
    assert msg["content"] == [{"type": "text",
                               "text": "It is sunny.\n\nSources:\n1. [Weather](https://w.example/paris)"}]
    events, snapshot = streamed(gemini)
    same_message(msg, snapshot)


def test_an_image_gemini_drew_is_a_markdown_image_and_goes_back_as_an_image():
    msg = whole(reply({"text": "Here:"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}))
    assert msg["content"] == [{"type": "text", "text": f"Here:\n\n![image](data:image/png;base64,{PNG})"}]
    body = build_request(req(user("draw"), assistant(msg["content"]), user("again")), FLASH)
    assert body["contents"][1]["parts"] == [{"text": "Here:"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]


def test_error_body():
    body = error_body("overloaded_error", "Overloaded", request_id="req_1")
    assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                    "request_id": "req_1"}
    ErrorResponse.model_validate(body)
    assert "request_id" not in error_body("api_error", "x")


# -- streams --------------------------------------------------------------------------------------

def test_stream_over_several_events_with_repeated_finish_reason():
    chunks = [
        reply({"text": "Let me", "thought": True}, finish="STOP", candidatesTokenCount=0),
        reply({"text": " see.", "thought": True}, finish="STOP", candidatesTokenCount=0),
        reply({"text": "The answer", "thoughtSignature": "ASIG"}, finish="STOP", candidatesTokenCount=2),
        reply({"text": " is 42."}, finish="STOP", candidatesTokenCount=4),
        reply({"functionCall": {"name": "note", "args": {"n": 42}}, "thoughtSignature": "FSIG"}, finish="STOP",
              candidatesTokenCount=9, thoughtsTokenCount=12),
    ]
    events, snapshot = streamed(*chunks)
    check_sequence(events)
    merged = reply({"text": "Let me", "thought": True}, {"text": " see.", "thought": True},
                   {"text": "The answer", "thoughtSignature": "ASIG"}, {"text": " is 42."},
                   {"functionCall": {"name": "note", "args": {"n": 42}}, "thoughtSignature": "FSIG"},
                   candidatesTokenCount=9, thoughtsTokenCount=12)
    msg = whole(merged)
    same_message(msg, snapshot)
    assert [b["type"] for b in msg["content"]] == ["thinking", "thinking", "text", "tool_use"]
    assert msg["content"][2]["text"] == "The answer is 42."
    assert msg["stop_reason"] == "tool_use" and msg["usage"]["output_tokens"] == 21
    assert events[0]["message"]["usage"]["input_tokens"] == 0
    assert events[-2]["usage"]["input_tokens"] == 10  # the final message_delta carries the real usage
    assert sum(e["type"] == "message_delta" for e in events) == 1


def test_stream_events_have_the_exact_shapes():
    events, _ = streamed(reply({"text": "t", "thought": True, "thoughtSignature": "S"},
                               {"functionCall": {"name": "f", "args": {"a": "b"}}}))
    assert events[1:4] == [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "t"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": f"{FP}.S"}},
    ]
    assert events[5]["content_block"] == {"type": "tool_use", "id": "toolu_r1", "name": "f", "input": {}}
    assert events[6]["delta"] == {"type": "input_json_delta", "partial_json": "{\"a\":\"b\"}"}
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_gemini_3_trailing_signature_closes_the_text_and_follows_it():
    chunks = [reply({"text": "Hello"}, finish=None), reply({"text": " there"}, finish=None),
              reply({"text": "", "thoughtSignature": "LAST"})]
    events, snapshot = streamed(*chunks)
    check_sequence(events)
    assert snapshot["content"] == [{"type": "text", "text": "Hello there"},
                                   {"type": "thinking", "thinking": "", "signature": f"{FP}.LAST"}]
    body = build_request(req(user("hi"), assistant(snapshot["content"]), user("and?")), G3)
    assert body["contents"][1]["parts"] == [{"text": "Hello there", "thoughtSignature": f"{FP}.LAST"}]


def test_fake_streaming_a_whole_reply_gives_the_same_message():
    gemini = reply({"text": "hm", "thought": True}, {"text": "ok", "thoughtSignature": "S"},
                   {"functionCall": {"name": "f", "args": {"x": [1, 2]}, "id": "c1"}, "thoughtSignature": "F"},
                   promptTokenCount=50, cachedContentTokenCount=20, thoughtsTokenCount=7)
    events, snapshot = streamed(gemini)
    check_sequence(events)
    same_message(whole(gemini), snapshot)


def test_a_refusal_stream_and_an_empty_one():
    events, snapshot = streamed(reply({"text": "partial"}, finish="SAFETY"))
    check_sequence(events)
    assert snapshot["stop_reason"] == "refusal" and events[-2]["delta"]["stop_details"]["type"] == "refusal"
    same_message(whole(reply({"text": "partial"}, finish="SAFETY")), snapshot)
    events, snapshot = streamed()
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    assert snapshot["content"] == [] and snapshot["stop_reason"] == "end_turn"


def test_feed_starts_the_stream_itself_and_start_is_sent_once():
    stream = MessageStream(model="m", message_id="msg_2")
    first = stream.feed(reply({"text": "a"}, finish=None))
    assert first[0]["type"] == "message_start" and stream.start() == []
    assert [e["type"] for e in stream.feed(reply({"text": "b"}))] == ["content_block_delta"]


# -- the round trip of a tool loop ----------------------------------------------------------------

@pytest.mark.parametrize("traits", [G3, FLASH])
def test_function_call_round_trip_keeps_the_sealed_signature_and_the_name(traits):
    gemini = reply({"text": "plan", "thought": True},
                   {"functionCall": {"name": "Bash", "args": {"command": "ls"}, "id": "gid-7"},
                    "thoughtSignature": "CikBcsjaf/+="})
    msg = whole(gemini)
    # What the SDK sends back: the response's content blocks, serialised by the SDK itself.
    content = [block.to_dict() for block in Message.model_validate(msg).content]
    call = msg["content"][-1]
    follow_up = req(user("list files"), {"role": "assistant", "content": content},
                    user([{"type": "tool_result", "tool_use_id": call["id"], "content": "a.py"}]),
                    tools=[{"name": "Bash", "input_schema": {"type": "object",
                                                             "properties": {"command": {"type": "string"}}}}])
    body = build_request(follow_up, traits)
    model_parts = body["contents"][1]["parts"]
    assert model_parts[0] == {"text": "plan", "thought": True}
    assert model_parts[1] == {"functionCall": {"name": "Bash", "args": {"command": "ls"}, "id": "gid-7"},
                              "thoughtSignature": f"{FP}.CikBcsjaf/+="}
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "Bash", "response": {"content": "a.py"}, "id": "gid-7"}}]
    # The service unseals later: Gemini's own signature, and the key that issued it.
    assert unseal_body(body) == FP
    assert body["contents"][1]["parts"][1]["thoughtSignature"] == "CikBcsjaf/+="


def test_tool_use_id_is_the_chat_scheme_with_an_anthropic_prefix():
    call_id = tool_use_id("abc", f"{FP}.SIG", "g1")
    assert call_id == f"toolu_abc__id__g1__thought__{FP}.SIG"
    assert split_tool_call_id(call_id)[1] == f"{FP}.SIG" and gemini_call_id(call_id) == "g1"
