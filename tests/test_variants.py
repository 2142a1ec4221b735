"""Model variants and list controls: -search (Google Search grounding with its sources), -nothinking and
-max per model family, SHOW_THINKING, WHITELIST/BLOCKED/EXTRA_MODELS, and random strings."""
from __future__ import annotations

import re

import openai
import pytest

from server.catalog import split_variant
from server.translate.openai_to_gemini import Extras, build_request
from server.translate.traits import traits_for
from tests.fake_gemini import Reply, text_reply
from tests.support.openai_schema import validate

HI = [{"role": "user", "content": "hi"}]


def model_ids(running, query=""):
    with running.http() as http:
        return [m["id"] for m in http.get("/v1/models" + query, headers=running.auth()).json()["data"]]


def sent(fake):
    [call] = fake.generate_calls()
    return call


def grounded(text="The answer [1]."):
    reply = text_reply(text)
    reply["candidates"][0]["groundingMetadata"] = {
        "webSearchQueries": ["q"],
        "groundingChunks": [{"web": {"uri": "https://example.org/a", "title": "Example A"}},
                            {"web": {"uri": "https://example.org/b", "title": "Example B"}},
                            {"web": {"uri": "https://example.org/a", "title": "Example A"}}]}
    return reply


# -- search ----------------------------------------------------------------------------------------

def test_search_twins_listed_only_with_search_mode(start_keyloom):
    off = start_keyloom()
    assert not [m for m in model_ids(off) if m.endswith("-search")]
    on = start_keyloom(SEARCH_MODE="true")
    ids = model_ids(on)
    assert "gemini-2.5-flash-search" in ids and "gemini-2.0-flash-search" in ids
    assert "gemma-3-27b-it-search" not in ids and not [m for m in ids if "embedding" in m]
    with pytest.raises(openai.NotFoundError):
        off.client().chat.completions.create(model="gemini-2.5-flash-search", messages=HI)


def test_search_request_adds_the_tool_and_prompt_and_returns_sources(start_keyloom, fake):
    running = start_keyloom(SEARCH_MODE="true", SEARCH_PROMPT="(search the web)")
    fake.script.append(Reply(body=grounded()))
    with running.http() as http:
        raw = http.post("/v1/chat/completions", headers=running.auth(),
                        json={"model": "gemini-2.5-flash-search", "messages": HI}).json()
    call = sent(fake)
    assert call.model == "gemini-2.5-flash"
    assert {"googleSearch": {}} in call.body["tools"]
    last = call.body["contents"][-1]
    assert last["role"] == "user" and last["parts"][-1] == {"text": "(search the web)"}
    validate("CreateChatCompletionResponse", raw)
    msg = raw["choices"][0]["message"]
    assert msg["content"] == ("The answer [1].\n\nSources:\n1. [Example A](https://example.org/a)"
                              "\n2. [Example B](https://example.org/b)")
    assert raw["model"] == "gemini-2.5-flash-search"
    assert raw["citations"] == ["https://example.org/a", "https://example.org/b"]
    first = msg["annotations"][0]["url_citation"]
    assert msg["content"][first["start_index"]:first["end_index"]] == "[Example A](https://example.org/a)"


@pytest.mark.parametrize("fake_streaming", ["true", "false"])
def test_search_sources_in_a_stream(start_keyloom, fake, fake_streaming):
    running = start_keyloom(SEARCH_MODE="true", FAKE_STREAMING=fake_streaming)
    fake.script.append(Reply(body=grounded("Streamed answer.")))
    chunks = list(running.client().chat.completions.create(model="gemini-2.5-flash-search", messages=HI,
                                                           stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Streamed answer.") and text.endswith("2. [Example B](https://example.org/b)")
    cited = [c.model_extra.get("citations") for c in chunks if c.model_extra.get("citations")]
    assert cited == [["https://example.org/a", "https://example.org/b"]]
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- thinking --------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,expected", [
    ("gemini-2.5-flash-nothinking", {"thinkingBudget": 0}),
    ("gemini-2.5-pro-nothinking", {"includeThoughts": True, "thinkingBudget": 128}),   # Pro cannot turn it off
    ("gemini-3-pro-preview-nothinking", {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-2.5-flash-max", {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-2.5-pro-max", {"includeThoughts": True, "thinkingBudget": 32768}),
    ("gemini-3-pro-preview-max", {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-2.0-flash-max", None),  # a model that does not think: dropped, not a 400
])
def test_thinking_suffixes_per_family(keyloom, fake, model, expected):
    r = keyloom.client().chat.completions.create(model=model, messages=HI, reasoning_effort="medium")
    assert r.model == model
    call = sent(fake)
    assert call.model == split_variant(model).base
    assert call.body.get("generationConfig", {}).get("thinkingConfig") == expected


def test_show_thinking_false_asks_for_no_thoughts(start_keyloom, fake):
    running = start_keyloom(SHOW_THINKING="false")
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI, reasoning_effort="high")
    first, second = fake.generate_calls()
    assert "thinkingConfig" not in first.body.get("generationConfig", {})
    assert second.body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576}


def test_reasoning_effort_is_never_sent_as_both_budget_and_level():
    for model in ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-3-flash-preview"):
        for effort in ("none", "minimal", "low", "medium", "high"):
            body = build_request({"messages": HI, "reasoning_effort": effort}, traits_for(model))
            tc = body["generationConfig"]["thinkingConfig"]
            assert not ("thinkingBudget" in tc and "thinkingLevel" in tc), (model, effort)


# -- list controls ---------------------------------------------------------------------------------

def test_whitelist_blocklist_and_extra_models(start_keyloom, fake):
    # bench-* models are served by the fake without being listed: an unlisted model Google still serves
    alias = "bench-words-3"
    running = start_keyloom(WHITELIST_MODELS=f"gemini-2.5-flash,gemini-2.5-pro,{alias}",
                            BLOCKED_MODELS="gemini-2.5-pro", EXTRA_MODELS=alias, SEARCH_MODE="true")
    assert model_ids(running) == ["gemini-2.5-flash", alias, "gemini-2.5-flash-search"]
    c = running.client()
    for refused in ("gemini-2.0-flash", "gemini-2.5-pro", "gemini-2.5-pro-search", "gemini-2.5-pro-max"):
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model=refused, messages=HI)
    c.chat.completions.create(model="gemini-2.5-flash-nothinking", messages=HI)
    c.chat.completions.create(model=alias, messages=HI)
    assert [call.model for call in fake.generate_calls()] == ["gemini-2.5-flash", alias]
    with running.http() as http:
        assert http.get("/v1/models/gemini-2.0-flash", headers=running.auth()).status_code == 404


# -- random strings --------------------------------------------------------------------------------

MARKER = re.compile(r"^[A-Za-z0-9]{5}$")


def echo_marker(rec):
    """The model repeats every text it got, the random string too."""
    texts = [p["text"] for c in rec.body.get("contents", []) for p in c["parts"] if "text" in p]
    texts += [p["text"] for p in rec.body.get("systemInstruction", {}).get("parts", [])]
    return Reply(body=text_reply(" | ".join(texts)))


def test_random_string_is_sent_but_never_returned(start_keyloom, fake):
    running = start_keyloom(RANDOM_STRING="true")
    fake.responder = echo_marker
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "the last turn"}]
    r = running.client().chat.completions.create(model="gemini-2.5-flash", messages=msgs)
    call = sent(fake)
    system = call.body["systemInstruction"]["parts"]
    assert system[0] == {"text": "You are terse."} and MARKER.match(system[1]["text"])
    marker = system[1]["text"]
    assert call.body["contents"][-1]["parts"] == [{"text": "the last turn"}]  # untouched
    assert marker not in r.choices[0].message.content and "the last turn" in r.choices[0].message.content
    # streamed too
    fake.requests.clear()
    chunks = running.client().chat.completions.create(model="gemini-2.5-flash", messages=msgs, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    marker2 = sent(fake).body["systemInstruction"]["parts"][1]["text"]
    assert marker2 != marker and marker2 not in text and "the last turn" in text


def test_random_string_placement_without_a_system_prompt(start_keyloom, fake):
    running = start_keyloom(RANDOM_STRING="true", RANDOM_STRING_LENGTH="9")
    c = running.client()
    c.chat.completions.create(model="gemini-2.5-flash", messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
    c.chat.completions.create(model="gemini-2.5-flash", messages=HI)
    c.chat.completions.create(model="gemma-3-27b-it", messages=HI)
    multi, single, gemma = fake.generate_calls()
    assert re.match(r"^[A-Za-z0-9]{9}$", multi.body["contents"][0]["parts"][0]["text"])
    assert multi.body["contents"][0]["parts"][1] == {"text": "a"} and "systemInstruction" not in multi.body
    assert single.body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert re.match(r"^[A-Za-z0-9]{9}$", single.body["systemInstruction"]["parts"][0]["text"])
    assert gemma.body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]  # nowhere safe: none
    assert "systemInstruction" not in gemma.body


def test_extras_are_pure():
    traits = traits_for("gemini-2.5-flash")
    body = build_request({"messages": HI}, traits, extras=Extras(search_prompt="", random_string="XYZ12"))
    assert body["tools"] == [{"googleSearch": {}}] and body["contents"][-1]["parts"] == [{"text": "hi"}]
    assert body["systemInstruction"] == {"parts": [{"text": "XYZ12"}]}
