"""OpenAI Responses ⇄ Gemini translation (server/translate/responses_to_gemini.py, gemini_to_responses.py).

Every Response object and stream event is checked against the OpenAI spec and parsed with the official SDK
types (the stream also through the SDK's own accumulator, which indexes items by output_index)."""
from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import openai.types.responses as sdk
import pytest
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from pydantic import TypeAdapter

from server.signatures import seal
from server.translate.gemini_body import DUMMY_SIGNATURE, Extras, TranslationError
from server.translate.gemini_to_responses import ResponseStream, response
from server.translate.openai_to_gemini import make_tool_call_id, split_tool_call_id
from server.translate.responses_to_gemini import build_request, remote_image_urls
from server.translate.traits import traits_for
from tests.support.openai_schema import validate

DATA = Path(__file__).resolve().parent / "data" / "responses"
FLASH = traits_for("gemini-2.5-flash")
PRO = traits_for("gemini-2.5-pro")
G3 = traits_for("gemini-3-pro-preview")
G3_FLASH = traits_for("gemini-3-flash-preview")
OLD = traits_for("gemini-2.0-flash")
GEMMA = traits_for("gemma-3-27b-it")
FP = "0123456789ab"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg=="
EVENT = TypeAdapter(sdk.ResponseStreamEvent)


def data(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return loaded


def counter() -> Any:
    n = itertools.count(1)
    return lambda: f"id{next(n)}"


def check_response(r: dict[str, Any]) -> sdk.Response:
    validate("Response", r)
    return sdk.Response.model_validate(r)


def check_events(events: list[dict[str, Any]], request: dict[str, Any] | None = None) -> None:
    """Spec-valid, SDK-typed, numbered 0, 1, 2, … and accepted by openai-python's stream accumulator."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for e in events:
        validate("ResponseStreamEvent", e)
        parsed = EVENT.validate_python(e)
        assert parsed.type == e["type"]
        state.handle_event(parsed)
    for e in events:
        if "response" in e:
            check_response(e["response"])


def reply(*parts: dict[str, Any], finish: str | None = "STOP", usage: dict[str, Any] | None = None,
          grounding: dict[str, Any] | None = None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    if grounding:
        cand["groundingMetadata"] = grounding
    out: dict[str, Any] = {"candidates": [cand]}
    if usage:
        out["usageMetadata"] = usage
    return out


def respond(gemini: dict[str, Any], request: dict[str, Any] | None = None, key_fp: str | None = FP) -> dict[str, Any]:
    return response(gemini, request=request or {"model": "gemini-2.5-flash", "input": "hi"}, response_id="resp_1",
                    model="gemini-2.5-flash", created=1700000000, key_fp=key_fp, new_id=counter())


def stream(events: list[dict[str, Any]], request: dict[str, Any] | None = None,
           key_fp: str | None = FP) -> tuple[list[dict[str, Any]], ResponseStream]:
    s = ResponseStream(request=request or {"model": "gemini-2.5-flash", "input": "hi"}, response_id="resp_1",
                       model="gemini-2.5-flash", created=1700000000, new_id=counter())
    s.key_fp = key_fp
    out = s.start()
    for e in events:
        out += s.feed(e)
    return out + s.finish(), s


# == requests =====================================================================================

def test_string_input_is_one_user_turn_with_safety_settings():
    body = build_request({"model": "gemini-2.5-flash", "input": "Hello"}, FLASH)
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]
    assert {s["threshold"] for s in body["safetySettings"]} == {"OFF"}
    assert "systemInstruction" not in body and "tools" not in body
    assert "generationConfig" not in body  # no reasoning.summary: no thought summaries asked for


def test_instructions_then_system_and_developer_messages_in_order():
    body = build_request({"instructions": "Be brief.", "input": [
        {"role": "developer", "content": "Dev one"},
        {"role": "user", "content": "Hi"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Sys two"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello",
                                                               "annotations": []}]},
    ]}, FLASH)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Dev one"}, {"text": "Sys two"}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]},
                                {"role": "model", "parts": [{"text": "Hello"}]}]


def test_gemma_gets_the_system_text_in_the_first_user_turn():
    body = build_request({"instructions": "Be brief.", "input": "Hi"}, GEMMA)
    assert "systemInstruction" not in body
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Be brief."}, {"text": "Hi"}]}]


def test_function_call_round_trip_keeps_signature_gemini_id_and_finds_the_name():
    call_id = make_tool_call_id("abc", seal("SIG", FP), "g-1")
    body = build_request({"input": [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "id": "fc_1", "call_id": call_id, "name": "get_weather",
         "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
        {"type": "function_call_output", "call_id": call_id, "output": "{\"temp_c\":21}"},
    ]}, G3)
    model, answer = body["contents"][1], body["contents"][2]
    assert model == {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"},
                                                                  "id": "g-1"},
                                                 "thoughtSignature": f"{FP}.SIG"}]}  # sealed: unsealed later
    assert answer == {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "id": "g-1",
                                                                      "response": {"content": {"temp_c": 21}}}}]}


def test_consecutive_model_items_make_one_turn_and_outputs_one_turn():
    body = build_request({"input": [
        {"role": "user", "content": "go"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thinking"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling both."}]},
        {"type": "function_call", "call_id": "call_a", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_b", "name": "b", "arguments": ""},
        {"type": "function_call_output", "call_id": "call_a", "output": "A"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "B"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]},
        {"role": "user", "content": "thanks"},
    ]}, G3)
    roles = [c["role"] for c in body["contents"]]
    assert roles == ["user", "model", "user"]
    model = body["contents"][1]["parts"]
    assert model[0] == {"text": "Calling both."}
    assert model[1]["thoughtSignature"] == DUMMY_SIGNATURE and "thoughtSignature" not in model[2]  # first call only
    user = body["contents"][2]["parts"]
    assert [next(iter(p)) for p in user] == ["functionResponse", "functionResponse", "inlineData", "text"]
    assert user[1]["functionResponse"] == {"name": "b", "response": {"content": "B"}}


def test_reasoning_encrypted_content_goes_on_the_next_unsigned_model_part():
    body = build_request({"input": [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "ENC1"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
        {"role": "user", "content": "again"},
        {"type": "message", "role": "assistant", "content": "Sure"},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "ENC2", "content": None},
        {"role": "user", "content": "bye"},
    ]}, G3)
    assert body["contents"][1]["parts"] == [{"text": "Hello", "thoughtSignature": "ENC1"}]
    # a reasoning item after the message (Gemini signed the answer's last part): back onto that part
    assert body["contents"][3]["parts"] == [{"text": "Sure", "thoughtSignature": "ENC2"}]


def test_reasoning_item_alone_adds_no_empty_turn():
    body = build_request({"input": [{"role": "user", "content": "a"},
                                    {"type": "reasoning", "summary": [], "encrypted_content": "X"},
                                    {"role": "user", "content": "b"}]}, FLASH)
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]


def test_images_as_data_url_and_fetched_http_url():
    url = "https://example.com/cat.png"
    req = {"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What?"},
        {"type": "input_image", "image_url": url, "detail": "auto"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "high"},
        {"type": "input_image", "image_url": url},
    ]}]}
    assert remote_image_urls(req) == [url]
    parts = build_request(req, FLASH, images={url: ("image/jpeg", "AAAA")})["contents"][0]["parts"]
    assert parts == [{"text": "What?"}, {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
                     {"inlineData": {"mimeType": "image/png", "data": PNG}},
                     {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}}]


def test_the_reference_full_request_translates():
    body = build_request(data("oa-request-full.json"), FLASH)
    assert body["systemInstruction"]["parts"] == [{"text": "You are a weather assistant. Answer in one sentence."}]
    user, model, answer = body["contents"]
    assert [next(iter(p)) for p in user["parts"]] == ["text", "inlineData", "inlineData"]
    assert user["parts"][2]["inlineData"] == {"mimeType": "text/plain", "data": "UGFyaXM="}
    assert model["parts"][0]["thoughtSignature"] == "gAAAAABoofDE...opaque-base64..."
    assert answer["parts"][0]["functionResponse"]["name"] == "get_weather"
    # function tools win over web_search (Gemini 2.x takes no googleSearch beside functions)
    assert body["tools"] == [{"functionDeclarations": [{"name": "get_weather",
                                                        "description": "Get the weather for a city",
                                                        "parameters": body["tools"][0]["functionDeclarations"][0][
                                                            "parameters"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseSchema"]["type"] == "object"
    assert config["maxOutputTokens"] == 1024 and config["temperature"] == 1 and config["topP"] == 1
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}


def test_codex_second_turn_translates_with_its_tools():
    req = data("codex-2-gemini-model-002.json")
    body = build_request(req, PRO)
    assert len(body["systemInstruction"]["parts"]) == 2  # one per developer message (its parts joined)
    assert body["systemInstruction"]["parts"][0]["text"].startswith("You are a coding agent")
    roles = [c["role"] for c in body["contents"]]
    assert roles == ["user", "model", "user"]
    call = body["contents"][1]["parts"][0]
    assert call["functionCall"] == {"name": "exec_command", "args": {"cmd": "ls -la"}}
    assert call["thoughtSignature"] == "gAAAAABfakeEncryptedReasoningo6rvgsh9ix24p2vu"
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "exec_command"
    names = [d["name"] for d in body["tools"][0]["functionDeclarations"]]
    assert "exec_command" in names and "close_agent" in names  # namespace tools are flattened
    assert len(body["tools"]) == 1  # web_search dropped beside functions
    for decl in body["tools"][0]["functionDeclarations"]:
        assert "additionalProperties" not in json.dumps(decl)
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}


def test_codex_image_and_effort_request():
    req = data("codex-4-effort-image-001.json")
    body = build_request(req, PRO)
    assert len(body["contents"]) == 1  # the two user messages merge into one turn
    parts = body["contents"][0]["parts"]
    assert [next(iter(p)) for p in parts] == ["text", "text", "inlineData", "text", "text"]
    assert parts[2]["inlineData"]["mimeType"] == "image/png"
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 24576}


@pytest.mark.parametrize(("traits", "effort", "expected"), [
    (FLASH, "none", {"thinkingBudget": 0}),
    (FLASH, "low", {"includeThoughts": True, "thinkingBudget": 1024}),
    (PRO, "none", {"includeThoughts": True, "thinkingBudget": 128}),
    (PRO, "xhigh", {"includeThoughts": True, "thinkingBudget": 32768}),
    (G3, "minimal", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    (G3_FLASH, "medium", {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
    (G3, "medium", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
])
def test_effort_per_model_family(traits, effort, expected):
    body = build_request({"input": "x", "reasoning": {"effort": effort, "summary": "auto"}}, traits)
    assert body["generationConfig"]["thinkingConfig"] == expected


def test_effort_without_summary_asks_no_thought_text_and_non_thinking_models_get_none():
    body = build_request({"input": "x", "reasoning": {"effort": "high"}}, FLASH)
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576}
    assert "generationConfig" not in build_request({"input": "x", "reasoning": {"effort": "high",
                                                                                "summary": "auto"}}, OLD)


def test_extras_thinking_overrides_the_client_effort():
    body = build_request({"input": "x", "reasoning": {"effort": "high", "summary": "auto"}}, FLASH,
                         extras=Extras(thinking="none"))
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}


def test_text_format_json_schema_and_json_object():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    body = build_request({"input": "x", "text": {"format": {"type": "json_schema", "name": "out", "strict": True,
                                                            "schema": schema}, "verbosity": "low"}}, FLASH)
    assert body["generationConfig"] == {"responseMimeType": "application/json",
                                        "responseSchema": {"type": "object", "properties": {"a": {"type": "string"}},
                                                           "required": ["a"]}}
    body = build_request({"input": "x", "text": {"format": {"type": "json_object"}}}, FLASH)
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


def test_tools_choice_and_builtin_tools():
    fn = {"type": "function", "name": "f", "description": "d", "strict": True,
          "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    g = {"type": "function", "name": "g", "parameters": None, "strict": False}
    body = build_request({"input": "x", "tools": [fn, g], "tool_choice": {"type": "function", "name": "g"}}, FLASH)
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        {"name": "g"}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}}
    for choice, mode in (("none", "NONE"), ("required", "ANY"), ("auto", "AUTO")):
        assert build_request({"input": "x", "tools": [fn], "tool_choice": choice},
                             FLASH)["toolConfig"]["functionCallingConfig"]["mode"] == mode
    allowed = build_request({"input": "x", "tools": [fn, g], "tool_choice": {
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "f"}]}}, FLASH)
    assert [d["name"] for d in allowed["tools"][0]["functionDeclarations"]] == ["f"]
    hosted = build_request({"input": "x", "tools": [{"type": "web_search_preview"}, {"type": "code_interpreter"},
                                                    {"type": "file_search", "vector_store_ids": ["v"]},
                                                    {"type": "mcp", "server_label": "s"}]}, FLASH)
    assert hosted["tools"] == [{"googleSearch": {}}, {"codeExecution": {}}]
    assert "tools" not in build_request({"input": "x", "tools": [{"type": "image_generation"}]}, FLASH)


def test_hosted_tool_items_are_skipped():
    body = build_request({"input": [
        {"role": "user", "content": "search"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
        {"type": "custom_tool_call", "call_id": "c", "name": "exec", "input": "x"},
        {"type": "custom_tool_call_output", "call_id": "c", "output": "y"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Found."}]},
    ]}, FLASH)
    assert body["contents"] == [{"role": "user", "parts": [{"text": "search"}]},
                                {"role": "model", "parts": [{"text": "Found."}]}]


@pytest.mark.parametrize(("req", "param"), [
    ({"input": None}, "input"),
    ({"input": 5}, "input"),
    ({"input": []}, "input"),
    ({"input": [[1, 2]]}, "input[0]"),
    ({"input": [None]}, "input[0]"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": 7}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": [None]}]}, "input[0].content[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 3}]}]}, "input[0].content[0].text"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
    ({"input": ["x", {"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]}, "input[0]"),
    ({"input": [{"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "input_text", "text": "t"},
                                             {"type": "input_image", "image_url": "https://x/y.png"}]}]},
     "input[1].content[1].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
     "input[0].content[0].file_data"),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "r"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": None}]}, "input[0].name"),
    ({"input": [{"type": "function_call", "call_id": 5, "name": "f"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{nope"}]},
     "input[0].arguments"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"},
                {"type": "function_call_output", "call_id": "c", "output": {"a": 1}}]}, "input[1].output"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"},
                {"type": "function_call_output", "call_id": "c", "output": [7]}]}, "input[1].output[0]"),
    ({"input": [{"type": "reasoning", "encrypted_content": 5}]}, "input[0].encrypted_content"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"type": "teleport"}]}, "input[0].type"),
    ({"input": [{"type": None}]}, "input[0].type"),
    ({"input": "x", "instructions": 5}, "instructions"),
    ({"input": "x", "tools": {"type": "function"}}, "tools"),
    ({"input": "x", "tools": [None]}, "tools[0].type"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": [1]}]}, "tools[0].parameters"),
    ({"input": "x", "tools": [{"type": "namespace", "name": "n", "tools": None}]}, "tools[0].tools"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "tool_choice": ["auto"]}, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "function"}}, "tool_choice.name"),
    ({"input": "x", "tool_choice": {"type": "allowed_tools", "tools": None}}, "tool_choice.tools"),
    ({"input": "x", "reasoning": "high"}, "reasoning"),
    ({"input": "x", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
    ({"input": "x", "reasoning": {"summary": "long"}}, "reasoning.summary"),
    ({"input": "x", "text": "json"}, "text"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "schema": None}}}, "text.format.schema"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "top_p": 3}, "top_p"),
    ({"input": "x", "max_output_tokens": 1.5}, "max_output_tokens"),
])
def test_bad_input_is_refused_with_its_param(req, param):
    with pytest.raises(TranslationError) as e:
        build_request(req, G3)
    assert e.value.param == param, e.value.message


def test_odd_shapes_raise_only_translation_errors():
    """Any JSON value in any field: a TranslationError or a body, never another exception."""
    odd: list[Any] = [None, 0, -1, 1.5, True, "", "x", [], [None], [[1]], {}, {"type": None}, {"type": 5},
                      {"type": "input_text"}, {"role": "user"}, {"type": "function_call"}]
    fields = ("input", "instructions", "tools", "tool_choice", "reasoning", "text", "temperature", "top_p",
              "max_output_tokens", "include", "metadata", "store", "parallel_tool_calls", "truncation")
    base = {"input": [{"role": "user", "content": "hi"}]}
    count = 0
    for field, value in itertools.product(fields, odd):
        for req in ({**base, field: value}, {"input": [value]}, {"input": [{"role": "user", "content": [value]}]},
                    {"input": [{"role": "assistant", "content": value}]},
                    {"input": [{"type": "function_call_output", "call_id": value, "output": value}]}):
            count += 1
            try:
                body = build_request(copy.deepcopy(req), G3)
            except TranslationError as e:
                assert e.param is None or isinstance(e.param, str)
            else:
                assert body["contents"]
    assert count == len(fields) * len(odd) * 5
    with pytest.raises(TranslationError):
        build_request([], FLASH)  # type: ignore[arg-type]


def test_ignored_fields_are_accepted():
    body = build_request({"input": "x", "metadata": {"a": "b"}, "user": "u", "store": False, "include": ["x"],
                          "client_metadata": {"k": "v"}, "prompt_cache_key": "p", "service_tier": "flex",
                          "safety_identifier": "s", "truncation": "auto", "parallel_tool_calls": False,
                          "stream": True, "something_new": {"x": 1}}, FLASH)
    assert body["contents"] == [{"role": "user", "parts": [{"text": "x"}]}]


# == responses ====================================================================================

def test_text_reply():
    r = respond(reply({"text": "Hello!"}, usage={"promptTokenCount": 12, "candidatesTokenCount": 3}))
    check_response(r)
    assert r["status"] == "completed" and r["incomplete_details"] is None and r["error"] is None
    assert r["output"] == [{"id": "msg_id1", "type": "message", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                                         "text": "Hello!"}]}]
    assert r["usage"] == {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                          "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}
    assert "output_text" not in r  # an SDK convenience, not on the wire
    assert sdk.Response.model_validate(r).output_text == "Hello!"


def test_the_request_settings_are_echoed():
    req = {"model": "m", "input": "x", "instructions": "Be brief.", "temperature": 0.5, "top_p": 0.9,
           "max_output_tokens": 100, "parallel_tool_calls": False, "store": False, "truncation": "auto",
           "metadata": {"k": "v"}, "reasoning": {"effort": "low", "summary": "auto"}, "tool_choice": "required",
           "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}],
           "text": {"format": {"type": "json_object"}}}
    r = respond(reply({"text": "{}"}), req)
    check_response(r)
    for k in ("instructions", "temperature", "top_p", "max_output_tokens", "parallel_tool_calls", "store",
              "truncation", "metadata", "tool_choice", "tools"):
        assert r[k] == req[k], k
    assert r["reasoning"] == {"effort": "low", "summary": "auto"}
    assert r["text"] == {"format": {"type": "json_object"}, "verbosity": "medium"}


def test_thoughts_become_a_reasoning_summary_and_usage_counts_cache_and_thoughts():
    req = {"input": "x", "reasoning": {"summary": "auto"}}
    r = respond(reply({"text": "**Plan**\n\n", "thought": True}, {"text": "Think more.", "thought": True},
                      {"text": "Answer."},
                      usage={"promptTokenCount": 20, "cachedContentTokenCount": 8, "candidatesTokenCount": 4,
                             "thoughtsTokenCount": 54}), req)
    check_response(r)
    reasoning, message = r["output"]
    assert reasoning == {"id": "rs_id1", "type": "reasoning",
                         "summary": [{"type": "summary_text", "text": "**Plan**\n\nThink more."}]}
    assert message["content"][0]["text"] == "Answer."
    assert r["usage"] == {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 0},
                          "output_tokens": 58, "output_tokens_details": {"reasoning_tokens": 54},
                          "total_tokens": 78}


def test_signatures_go_sealed_into_encrypted_content_only_when_included():
    gemini = reply({"text": "plan", "thought": True}, {"text": "Hi", "thoughtSignature": "SIG"})
    req = {"input": "x", "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"}}
    r = respond(gemini, req)
    check_response(r)
    assert r["output"][0]["encrypted_content"] == f"{FP}.SIG"
    plain = respond(gemini, {"input": "x"})
    assert "encrypted_content" not in plain["output"][0]


def test_trailing_signature_gets_a_reasoning_item_after_the_message():
    req = {"input": "x", "include": ["reasoning.encrypted_content"]}
    r = respond(reply({"text": "Hello"}, {"text": "", "thoughtSignature": "TAIL"}), req, key_fp=None)
    check_response(r)
    assert [i["type"] for i in r["output"]] == ["message", "reasoning"]
    assert r["output"][1] == {"id": "rs_id2", "type": "reasoning", "summary": [], "encrypted_content": "TAIL"}


def test_two_parallel_function_calls():
    gemini = reply({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "g1"},
                    "thoughtSignature": "SIG"},
                   {"functionCall": {"name": "get_time", "args": {}}})
    r = respond(gemini)
    check_response(r)
    first, second = r["output"]
    assert first == {"id": "fc_id2", "type": "function_call", "status": "completed", "name": "get_weather",
                     "arguments": "{\"city\":\"Paris\"}", "call_id": f"call_id1__id__g1__thought__{FP}.SIG"}
    assert second["name"] == "get_time" and second["arguments"] == "{}"
    assert split_tool_call_id(second["call_id"])[1] is None


def test_namespaced_function_calls_name_their_namespace():
    req = {"input": "x", "tools": [{"type": "namespace", "name": "agents", "description": "",
                                    "tools": [{"type": "function", "name": "spawn", "strict": False,
                                               "parameters": {"type": "object", "properties": {}}}]}]}
    r = respond(reply({"functionCall": {"name": "spawn", "args": {}}}), req)
    assert r["output"][0]["namespace"] == "agents"
    check_response(r)


def test_grounding_becomes_url_citations_with_the_chat_offsets():
    grounding = {"groundingChunks": [{"web": {"uri": "https://a.example/x", "title": "A"}},
                                     {"web": {"uri": "https://b.example/y", "title": "B"}}]}
    r = respond(reply({"text": "It is sunny."}, grounding=grounding))
    check_response(r)
    part = r["output"][0]["content"][0]
    text = part["text"]
    assert text.startswith("It is sunny.\n\nSources:\n1. [A](https://a.example/x)")
    for note in part["annotations"]:
        assert note["type"] == "url_citation"
        assert text[note["start_index"]:note["end_index"]] == f"[{note['title']}]({note['url']})"
    assert [n["url"] for n in part["annotations"]] == ["https://a.example/x", "https://b.example/y"]


def test_max_tokens_is_incomplete():
    r = respond(reply({"text": "Once upon a"}, finish="MAX_TOKENS"))
    check_response(r)
    assert r["status"] == "incomplete" and r["incomplete_details"] == {"reason": "max_output_tokens"}
    assert r["output"][0]["status"] == "incomplete"
    assert respond(reply({"text": "x"}, finish="SAFETY"))["incomplete_details"] == {"reason": "content_filter"}


def test_images_become_image_generation_calls_and_come_back_as_images():
    r = respond(reply({"text": "Here:"}, {"inlineData": {"mimeType": "image/png", "data": PNG},
                                          "thoughtSignature": "IMG"}))
    check_response(r)
    assert r["output"][1] == {"id": "ig_id2", "type": "image_generation_call", "status": "completed", "result": PNG}
    body = build_request({"input": [{"role": "user", "content": "draw"}, *r["output"],
                                    {"role": "user", "content": "bluer"}]}, G3,
                         extras=Extras(image_signatures=lambda d: "SEALED-IMG" if d == PNG else None))
    assert body["contents"][1]["parts"] == [{"text": "Here:"}, {"inlineData": {"mimeType": "image/png", "data": PNG},
                                                                "thoughtSignature": "SEALED-IMG"}]


def test_code_execution_is_rendered_as_text_like_the_chat_side():
    r = respond(reply({"executableCode": {"language": "PYTHON", "code": "print(1)"}},
                      {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1"}}, {"text": "Done."}))
    check_response(r)
    assert r["output"][0]["content"][0]["text"] == "\n```python\nprint(1)\n```\n\n```\n1\n```\nDone."


# == streams ======================================================================================

def test_stream_of_text_in_the_reference_order():
    events, s = stream([reply({"text": "Hello!"}, finish=None), reply({"text": " How can I help?"}),
                        reply({"text": ""}, usage={"promptTokenCount": 1, "candidatesTokenCount": 2})])
    check_events(events)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert events[6]["text"] == "Hello! How can I help?"
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert events[-1]["response"]["usage"]["total_tokens"] == 3
    assert s.output == events[-1]["response"]["output"]


def test_stream_with_reasoning_calls_and_repeated_finish_reason():
    req = {"input": "x", "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "detailed"}}
    gemini = [
        reply({"text": "**Plan** ", "thought": True}, finish="STOP"),
        reply({"text": "look around", "thought": True}, finish="STOP"),
        reply({"text": "Let me check."}, finish="STOP"),
        reply({"functionCall": {"name": "ls", "args": {"path": "."}}, "thoughtSignature": "S1"},
              {"functionCall": {"name": "pwd", "args": {}}}, finish="STOP",
              usage={"promptTokenCount": 5, "candidatesTokenCount": 6, "thoughtsTokenCount": 7}),
    ]
    events, s = stream(gemini, req)
    check_events(events, req)
    kinds = [e["type"] for e in events]
    assert kinds.count("response.completed") == 1 and kinds[-1] == "response.completed"
    assert kinds[2:8] == ["response.output_item.added", "response.reasoning_summary_part.added",
                          "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
                          "response.reasoning_summary_text.done", "response.reasoning_summary_part.done"]
    calls = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["name"], e["arguments"], e["output_index"]) for e in calls] == [("ls", "{\"path\":\".\"}", 2),
                                                                               ("pwd", "{}", 3)]
    for e in events:
        if "output_index" in e and "item_id" in e:
            assert e["item_id"] == s.output[e["output_index"]]["id"]
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][0]["summary"][0]["text"] == "**Plan** look around"
    assert final["output"][2]["call_id"].endswith(f"__thought__{FP}.S1")
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 7


def test_fake_streaming_gives_the_same_response():
    req = {"input": "x", "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"}}
    gemini = reply({"text": "hm", "thought": True}, {"text": "Answer", "thoughtSignature": "A"},
                   {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "B"},
                   grounding={"groundingChunks": [{"web": {"uri": "https://x.example", "title": "X"}}]},
                   usage={"promptTokenCount": 3, "candidatesTokenCount": 4})
    events, _ = stream([gemini], req)
    check_events(events, req)
    assert events[-1]["response"] == respond(gemini, req)


def test_stream_at_max_tokens_ends_incomplete():
    events, _ = stream([reply({"text": "Once upon"}, finish=None), reply({"text": " a"}, finish="MAX_TOKENS")])
    check_events(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert done[0]["item"]["status"] == "incomplete"


def test_stream_grounding_adds_annotation_events():
    grounding = {"groundingChunks": [{"web": {"uri": "https://a.example", "title": "A"}}]}
    events, _ = stream([reply({"text": "Sunny."}, finish=None), reply({"text": ""}, grounding=grounding)])
    check_events(events)
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert len(added) == 1 and added[0]["annotation"]["url"] == "https://a.example"
    final = events[-1]["response"]["output"][0]["content"][0]
    assert final["annotations"] == [added[0]["annotation"]]


def test_failed_stream_never_completes():
    s = ResponseStream(request={"input": "x"}, response_id="resp_1", model="gemini-2.5-flash", created=1,
                       new_id=counter())
    events = s.start() + s.feed(reply({"text": "Hel"}, finish=None)) + s.fail("server_error", "Gemini returned 503")
    check_events(events)
    kinds = [e["type"] for e in events]
    assert "response.completed" not in kinds and kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error",
                                                                "message": "Gemini returned 503"}


def test_events_with_no_candidates_or_odd_parts_are_harmless():
    events, _ = stream([{"usageMetadata": {"promptTokenCount": 2}}, {"candidates": None}, {"candidates": [5]},
                        reply("junk", {"text": None}, {"functionCall": "x"}, {"text": "ok"})])  # type: ignore[arg-type]
    check_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "ok"


# == the round trip ===============================================================================

def test_function_call_round_trip_through_the_responses_dialect():
    """Gemini's call → Responses output → the client's next request → the same signature and id for Gemini."""
    req: dict[str, Any] = {"model": "gemini-3-pro-preview", "include": ["reasoning.encrypted_content"],
                           "reasoning": {"summary": "auto"},
                           "input": [{"role": "user", "content": "Weather in Paris and Rome?"}],
                           "tools": [{"type": "function", "name": "get_weather", "strict": True,
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}
    gemini = reply({"text": "Two cities.", "thought": True, "thoughtSignature": "THINK"},
                   {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "p1"},
                    "thoughtSignature": "CALLSIG"},
                   {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}, "id": "r1"}})
    out = respond(gemini, req)["output"]
    assert [i["type"] for i in out] == ["reasoning", "function_call", "function_call"]
    outputs = [{"type": "function_call_output", "call_id": item["call_id"], "output": f"sunny {n}"}
               for n, item in enumerate(out[1:])]
    body = build_request({**req, "input": [*req["input"], *out, *outputs]}, G3)
    model, answers = body["contents"][1], body["contents"][2]
    assert model["role"] == "model" and answers["role"] == "user"
    first, second = model["parts"]
    assert first == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "p1"},
                     "thoughtSignature": f"{FP}.CALLSIG"}
    assert second["functionCall"]["id"] == "r1"
    assert second["thoughtSignature"] == f"{FP}.THINK"  # the reasoning item's, on the next unsigned part
    assert [p["functionResponse"] for p in answers["parts"]] == [
        {"name": "get_weather", "id": "p1", "response": {"content": "sunny 0"}},
        {"name": "get_weather", "id": "r1", "response": {"content": "sunny 1"}}]


def test_a_codex_turn_answered_and_streamed_is_valid_for_codex_request_fields():
    """Codex's request (namespace and web_search tools, text.verbosity, no instructions) echoed in a valid Response."""
    req = data("codex-2-gemini-model-002.json")
    gemini = reply({"text": "Listing.", "thought": True},
                   {"functionCall": {"name": "close_agent", "args": {"id": "a"}}, "thoughtSignature": "S"},
                   usage={"promptTokenCount": 100, "candidatesTokenCount": 50})
    events, _ = stream([gemini], req)
    check_events(events, req)
    final = events[-1]["response"]
    assert final == respond(gemini, req)
    assert final["output"][1]["namespace"] == "multi_agent_v1"
    assert final["tools"] == req["tools"] and final["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
