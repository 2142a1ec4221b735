"""OpenAI → Gemini request translation: every rule, one test (or a table) each."""
from __future__ import annotations

import base64

import pytest

from server.translate.openai_to_gemini import (
    DUMMY_SIGNATURE,
    SAFETY_CATEGORIES,
    TranslationError,
    build_request,
    convert_messages,
    generation_config,
    make_tool_call_id,
    parse_data_url,
    remote_image_urls,
    split_tool_call_id,
    thinking_config,
    tools_and_config,
)
from server.translate.schema import to_gemini_schema
from server.translate.traits import traits_for

FLASH = traits_for("gemini-2.5-flash")
PRO = traits_for("gemini-2.5-pro")
G3 = traits_for("gemini-3-pro-preview")
G3_FLASH = traits_for("gemini-3-flash-preview")
OLD = traits_for("gemini-2.0-flash")
GEMMA = traits_for("gemma-3-27b-it")


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


# -- system messages ---------------------------------------------------------------------------

def test_all_system_and_developer_messages_go_to_system_instruction_in_order_with_names():
    system, contents = convert_messages([
        {"role": "system", "content": "Main prompt."},
        {"role": "user", "content": "Hi"},
        {"role": "system", "name": "example_user", "content": "Alex: hello"},
        {"role": "developer", "content": [{"type": "text", "text": "Dev note"}]},
        {"role": "assistant", "content": "Hello"},
        {"role": "system", "content": "[Author's note]"},
    ], FLASH)
    assert system == [{"text": "Main prompt."}, {"text": "example_user: Alex: hello"}, {"text": "Dev note"},
                      {"text": "[Author's note]"}]
    assert contents == [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Hello"}]}]


def test_empty_system_messages_are_dropped():
    system, _ = convert_messages(msgs(("system", ""), ("user", "x")), FLASH)
    assert system == []


def test_gemma_gets_system_text_as_first_user_turn():
    system, contents = convert_messages(msgs(("system", "Be brief."), ("user", "Hi")), GEMMA)
    assert system == []
    assert contents == [{"role": "user", "parts": [{"text": "Be brief."}, {"text": "Hi"}]}]
    body = build_request({"messages": msgs(("system", "S"), ("user", "U"))}, GEMMA)
    assert "systemInstruction" not in body


def test_only_system_messages_become_the_user_turn():
    system, contents = convert_messages(msgs(("system", "Tell a story.")), FLASH)
    assert system == []
    assert contents == [{"role": "user", "parts": [{"text": "Tell a story."}]}]


# -- roles, merging, content -------------------------------------------------------------------

def test_assistant_becomes_model_and_same_role_turns_merge():
    _, contents = convert_messages(msgs(("user", "a"), ("user", "b"), ("assistant", "c"), ("assistant", "d"),
                                        ("user", "e")), FLASH)
    assert contents == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
        {"role": "user", "parts": [{"text": "e"}]},
    ]


def test_merge_across_a_dropped_system_message():
    _, contents = convert_messages(msgs(("user", "a"), ("system", "s"), ("user", "b")), FLASH)
    assert contents == [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]


def test_assistant_prefill_last_is_kept():
    _, contents = convert_messages(msgs(("user", "Write a poem"), ("assistant", "Roses are")), FLASH)
    assert contents[-1] == {"role": "model", "parts": [{"text": "Roses are"}]}


def test_part_array_content_and_empty_parts_dropped():
    _, contents = convert_messages([{"role": "user", "content": [
        {"type": "text", "text": "one"}, {"type": "text", "text": ""}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": ""}, {"role": "user", "content": "three"}], FLASH)
    assert contents == [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}, {"text": "three"}]}]


def test_user_name_is_kept_as_prefix():
    _, contents = convert_messages([{"role": "user", "name": "Alex", "content": "hi"}], FLASH)
    assert contents[0]["parts"][0] == {"text": "Alex: hi"}


def test_data_url_image_becomes_inline_data():
    url = "data:image/png;base64,iVBORw0KGgo="
    _, contents = convert_messages([{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]}], FLASH)
    assert contents[0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}


def test_fetched_http_image_is_used_and_unfetched_one_is_a_clear_error():
    url = "https://example.com/cat.jpg"
    req = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    assert remote_image_urls({"messages": req}) == [url]
    _, contents = convert_messages(req, FLASH, {url: ("image/jpeg", "AAAA")})
    assert contents[0]["parts"] == [{"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}}]
    with pytest.raises(TranslationError) as e:
        convert_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y"}}]}],
                         FLASH)
    assert e.value.param == "messages[0].content[0].image_url.url"


def test_data_url_forms():
    assert parse_data_url("data:image/jpeg;base64,/9j/\n4AA=", "x") == ("image/jpeg", "/9j/4AA=")
    assert parse_data_url("data:text/plain,hello%20world", "x") == (
        "text/plain", base64.b64encode(b"hello world").decode())
    with pytest.raises(TranslationError):
        parse_data_url("data:image/png;base64", "x")


def test_audio_and_file_parts():
    _, contents = convert_messages([{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]}],
        FLASH)
    assert [p["inlineData"]["mimeType"] for p in contents[0]["parts"]] == ["audio/wav", "audio/mpeg",
                                                                          "application/pdf"]


@pytest.mark.parametrize("messages, param", [
    ([], "messages"),
    ("hello", "messages"),
    ([{"role": "wizard", "content": "x"}], "messages[0].role"),
    (["not an object"], "messages[0]"),
    ([{"role": "user", "content": 42}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "video", "video": {}}]}], "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text"),
    ([{"role": "tool", "tool_call_id": "nope", "content": "x"}], "messages[0].tool_call_id"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:a/b;base64,AA"}}]}],
     "messages[0].content[0]"),
])
def test_bad_messages_name_the_offending_field(messages, param):
    with pytest.raises(TranslationError) as e:
        convert_messages(messages, FLASH)
    assert e.value.param == param
    assert e.value.message


# -- tool calls --------------------------------------------------------------------------------

def test_tool_calls_and_results_round_trip_with_name_recovered_from_id():
    call_id = make_tool_call_id("abc123", None)
    _, contents = convert_messages([
        {"role": "user", "content": "weather in Paris?"},
        # SillyTavern: no content key at all
        {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                                              "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": call_id, "content": "[No content]"},
    ], FLASH)
    assert contents[1] == {"role": "model", "parts": [{"functionCall": {"name": "get_weather",
                                                                        "args": {"city": "Paris"}}}]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"content": {"temp": 21}}}},
        {"functionResponse": {"name": "get_weather", "response": {"content": "[No content]"}}}]}


def test_assistant_tool_calls_with_content_null_and_text():
    _, contents = convert_messages([
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "[1,2]"}}]},
    ], FLASH)
    assert contents[1]["parts"] == [{"functionCall": {"name": "a", "args": {}}}]
    assert contents[3]["parts"] == [{"text": "Let me check."},
                                    {"functionCall": {"name": "b", "args": {"value": [1, 2]}}}]


def test_thought_signature_travels_inside_the_call_id():
    cid = make_tool_call_id("r4nd", "CikBcsjaf+/=")
    assert split_tool_call_id(cid) == ("call_r4nd", "CikBcsjaf+/=")
    assert split_tool_call_id("call_plain") == ("call_plain", None)
    _, contents = convert_messages([
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": cid, "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": cid, "content": "done"}], FLASH)
    assert contents[1]["parts"][0]["thoughtSignature"] == "CikBcsjaf+/="
    assert contents[2]["parts"][0]["functionResponse"]["name"] == "f"


def test_gemini3_gets_the_documented_placeholder_signature_when_none_is_known():
    _, contents = convert_messages([
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}], G3)
    parts = contents[1]["parts"]
    assert parts[0]["thoughtSignature"] == DUMMY_SIGNATURE
    assert "thoughtSignature" not in parts[1]
    _, contents = convert_messages([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}], FLASH)
    assert "thoughtSignature" not in contents[1]["parts"][0]


def test_tool_message_falls_back_to_its_name_and_deprecated_function_role():
    _, contents = convert_messages([
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "lost", "name": "lookup", "content": "r"},
        {"role": "function", "name": "legacy", "content": "r2"}], FLASH)
    assert contents[0]["parts"][0] == {"text": "x"}  # same role (user): merged into one turn
    assert [p["functionResponse"]["name"] for p in contents[0]["parts"][1:]] == ["lookup", "legacy"]


def test_invalid_tool_arguments_are_a_clear_error():
    with pytest.raises(TranslationError) as e:
        convert_messages([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}], FLASH)
    assert e.value.param == "messages[1].tool_calls[0].function.arguments"


# -- tools and tool_choice ---------------------------------------------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                   "additionalProperties": False,
                   "properties": {"city": {"type": "string", "description": "City"},
                                  "unit": {"type": ["string", "null"], "enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}


def test_tools_become_function_declarations_without_unsupported_keys():
    tools, config = tools_and_config({"tools": [WEATHER]})
    assert tools == [{"functionDeclarations": [{
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "description": "City"},
                                      "unit": {"type": "string", "enum": ["c", "f"], "nullable": True}},
                       "required": ["city", "unit"]}}]}]
    assert config is None


def test_function_without_parameters_or_with_empty_object_has_no_parameters():
    tools, _ = tools_and_config({"tools": [
        {"type": "function", "function": {"name": "now"}},
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}]})
    assert tools == [{"functionDeclarations": [{"name": "now"}, {"name": "ping"}]}]


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
    ("none", {"functionCallingConfig": {"mode": "NONE"}}),
    ("required", {"functionCallingConfig": {"mode": "ANY"}}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}},
     {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}),
])
def test_tool_choice_mapping(choice, expected):
    _, config = tools_and_config({"tools": [WEATHER], "tool_choice": choice})
    assert config == expected


def test_allowed_tools_auto_narrows_the_declarations():
    other = {"type": "function", "function": {"name": "other"}}
    tools, config = tools_and_config({"tools": [WEATHER, other], "tool_choice": {
        "type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
            {"type": "function", "function": {"name": "other"}}]}}})
    assert [d["name"] for d in tools[0]["functionDeclarations"]] == ["other"]
    assert config == {"functionCallingConfig": {"mode": "AUTO"}}


def test_tool_choice_without_tools_sends_nothing_and_bad_choice_is_an_error():
    assert tools_and_config({"tool_choice": "auto"}) == (None, None)
    with pytest.raises(TranslationError):
        tools_and_config({"tools": [WEATHER], "tool_choice": "sometimes"})
    with pytest.raises(TranslationError):
        tools_and_config({"tools": [{"type": "custom", "custom": {"name": "x"}}]})


def test_deprecated_functions_field():
    tools, config = tools_and_config({"functions": [{"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}}}], "function_call": {"name": "f"}})
    assert tools[0]["functionDeclarations"][0]["name"] == "f"
    assert config == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}


# -- schema cleaning ---------------------------------------------------------------------------

def test_schema_refs_are_inlined_and_oneof_becomes_anyof():
    schema = {"type": "object", "$defs": {"Pet": {"type": "object", "properties": {"name": {"type": "string"}},
                                                  "additionalProperties": False}},
              "properties": {"pet": {"$ref": "#/$defs/Pet"},
                             "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                             "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                             "kind": {"const": "dog"},
                             "when": {"type": "string", "format": "date-time"},
                             "email": {"type": "string", "format": "email"},
                             "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
              "required": ["pet", "ghost"]}
    out = to_gemini_schema(schema)
    assert out["properties"]["pet"] == {"type": "object", "properties": {"name": {"type": "string"}}}
    assert out["properties"]["either"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert out["properties"]["maybe"] == {"type": "string", "nullable": True}
    assert out["properties"]["kind"] == {"enum": ["dog"], "type": "string"}
    assert out["properties"]["when"]["format"] == "date-time"
    assert "format" not in out["properties"]["email"]
    assert out["properties"]["tags"] == {"type": "array", "items": {"type": "string"}, "minItems": 1}
    assert out["required"] == ["pet"]
    assert "$defs" not in out


def test_schema_recursive_ref_terminates_and_allof_merges():
    schema = {"$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
              "$ref": "#/$defs/Node"}
    out = to_gemini_schema(schema)
    depth = 0
    node = out
    while "properties" in node:
        node = node["properties"]["child"]
        depth += 1
    assert 1 <= depth <= 10
    merged = to_gemini_schema({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                                         {"properties": {"b": {"type": "number"}}, "required": ["b"]}]})
    assert merged == {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}},
                      "required": ["a", "b"]}


# -- generation parameters ---------------------------------------------------------------------

def test_generation_parameters_map_to_gemini_names():
    config = generation_config({"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_tokens": 300, "seed": 42,
                                "n": 2, "stop": ["\nAlex:", "END"], "presence_penalty": 0.5,
                                "frequency_penalty": -0.5}, OLD)
    assert config == {"temperature": 0.7, "topP": 0.9, "topK": 40, "maxOutputTokens": 300, "seed": 42,
                      "candidateCount": 2, "stopSequences": ["\nAlex:", "END"], "presencePenalty": 0.5,
                      "frequencyPenalty": -0.5}


def test_max_completion_tokens_wins_and_zero_penalties_are_not_sent():
    config = generation_config({"max_tokens": 100, "max_completion_tokens": 900, "presence_penalty": 0,
                                "frequency_penalty": 0}, OLD)
    assert config == {"maxOutputTokens": 900}


def test_stop_as_string_and_at_most_five():
    assert generation_config({"stop": "END"}, OLD) == {"stopSequences": ["END"]}
    assert generation_config({"stop": [str(i) for i in range(8)]}, OLD)["stopSequences"] == ["0", "1", "2", "3", "4"]
    assert generation_config({"stop": []}, OLD) == {}
    assert generation_config({"stop": None}, OLD) == {}


@pytest.mark.parametrize("field, value", [
    ("temperature", "hot"), ("temperature", 3), ("top_p", 1.5), ("max_tokens", 0), ("max_tokens", "300"),
    ("n", 0), ("n", 9), ("stop", 5), ("stop", [1]), ("presence_penalty", 3), ("top_k", True),
])
def test_out_of_range_or_wrong_type_parameters_are_clear_errors(field, value):
    with pytest.raises(TranslationError) as e:
        generation_config({field: value}, OLD)
    assert e.value.param == field


def test_response_format():
    assert generation_config({"response_format": {"type": "text"}}, OLD) == {}
    assert generation_config({"response_format": {"type": "json_object"}}, OLD) == {
        "responseMimeType": "application/json"}
    config = generation_config({"response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True, "schema": {"type": "object", "additionalProperties": False,
                                                     "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}},
        OLD)
    assert config == {"responseMimeType": "application/json", "responseSchema": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}
    with pytest.raises(TranslationError):
        generation_config({"response_format": {"type": "xml"}}, OLD)


def test_unknown_fields_and_empty_logit_bias_are_ignored():
    body = build_request({"model": "gemini-2.0-flash", "messages": msgs(("user", "hi")), "logit_bias": {},
                          "user": "u1", "store": True, "metadata": {"a": 1}, "service_tier": "auto",
                          "parallel_tool_calls": False, "some_future_field": [1, 2]}, OLD)
    assert body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                    "safetySettings": [{"category": c, "threshold": "OFF"} for c in SAFETY_CATEGORIES]}


# -- thinking ----------------------------------------------------------------------------------

@pytest.mark.parametrize("traits, effort, expected", [
    (FLASH, None, {"includeThoughts": True}),
    (FLASH, "none", {"thinkingBudget": 0}),
    (FLASH, "minimal", {"includeThoughts": True, "thinkingBudget": 512}),
    (FLASH, "low", {"includeThoughts": True, "thinkingBudget": 1024}),
    (FLASH, "medium", {"includeThoughts": True, "thinkingBudget": 8192}),
    (FLASH, "high", {"includeThoughts": True, "thinkingBudget": 24576}),
    (PRO, "none", {"includeThoughts": True, "thinkingBudget": 128}),  # Pro cannot turn thinking off
    (PRO, "max", {"includeThoughts": True, "thinkingBudget": 32768}),
    (G3, "low", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    (G3, "none", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    (G3, "high", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    (G3_FLASH, "minimal", {"includeThoughts": True, "thinkingLevel": "MINIMAL"}),
    (G3_FLASH, "medium", {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
    (OLD, "high", None),    # a model that does not think: dropped, not an error
    (GEMMA, "low", None),
])
def test_reasoning_effort_maps_to_budget_or_level_never_both(traits, effort, expected):
    got = thinking_config(effort, traits)
    assert got == expected
    if got:
        assert not ("thinkingBudget" in got and "thinkingLevel" in got)


def test_bad_reasoning_effort_is_an_error_only_for_thinking_models():
    with pytest.raises(TranslationError):
        thinking_config("extreme", FLASH)
    assert thinking_config("extreme", OLD) is None


@pytest.mark.parametrize("model, thinks, style", [
    ("gemini-2.5-flash", True, "budget"), ("gemini-2.5-pro", True, "budget"), ("gemini-3-pro-preview", True, "level"),
    ("gemini-2.0-flash", False, "budget"), ("gemini-2.0-flash-thinking-exp", True, "budget"),
    ("gemini-2.5-flash-image", False, "budget"), ("gemini-2.5-flash-preview-tts", False, "budget"),
    ("models/gemini-2.5-flash", True, "budget"),
])
def test_model_traits_by_name(model, thinks, style):
    t = traits_for(model)
    assert (t.thinks, t.thinking_style) == (thinks, style)


def test_listing_overrides_name_guess_and_legacy_models_get_block_none():
    assert traits_for("gemini-2.0-flash", {"thinking": True}).thinks is True
    assert traits_for("gemini-2.5-flash", {"name": "models/gemini-2.5-flash"}).thinks is True
    assert traits_for("gemini-1.5-flash-001").safety_threshold == "BLOCK_NONE"
    assert traits_for("gemini-2.5-flash").safety_threshold == "OFF"


# -- a whole SillyTavern request ---------------------------------------------------------------

def test_sillytavern_request_translates_as_gemini_expects():
    st = {
        "messages": [
            {"role": "system", "content": "Write Seraphina's next reply in a fictional chat between Seraphina and "
                                          "Alex."},
            {"role": "system", "content": "[Seraphina's personality: caring, protective]"},
            {"role": "system", "content": "[Start a new Chat]"},
            {"role": "system", "name": "example_user", "content": "Alex: Where am I?"},
            {"role": "system", "name": "example_assistant", "content": "Seraphina: You're safe in my glade."},
            {"role": "system", "content": "[Start a new Chat]"},
            {"role": "assistant", "content": "*You wake with a start.* Oh, you're awake."},
            {"role": "user", "content": "I'm okay, I think."},
            {"role": "user", "content": "What happened?"},
            {"role": "assistant", "content": "Seraphina:"},
        ],
        "model": "gemini-2.5-flash", "temperature": 1, "max_tokens": 300, "stream": True, "presence_penalty": 0,
        "frequency_penalty": 0, "top_p": 1, "stop": ["\nAlex:"], "logit_bias": {},
    }
    body = build_request(st, FLASH)
    assert [p["text"] for p in body["systemInstruction"]["parts"]] == [
        "Write Seraphina's next reply in a fictional chat between Seraphina and Alex.",
        "[Seraphina's personality: caring, protective]", "[Start a new Chat]", "example_user: Alex: Where am I?",
        "example_assistant: Seraphina: You're safe in my glade.", "[Start a new Chat]"]
    assert body["contents"] == [
        {"role": "model", "parts": [{"text": "*You wake with a start.* Oh, you're awake."}]},
        {"role": "user", "parts": [{"text": "I'm okay, I think."}, {"text": "What happened?"}]},
        {"role": "model", "parts": [{"text": "Seraphina:"}]},
    ]
    assert body["generationConfig"] == {"temperature": 1, "topP": 1, "maxOutputTokens": 300,
                                        "stopSequences": ["\nAlex:"], "thinkingConfig": {"includeThoughts": True}}
    assert body["safetySettings"] == [{"category": c, "threshold": "OFF"} for c in SAFETY_CATEGORIES]
