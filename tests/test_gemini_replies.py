"""Replies as Gemini really sends them (issue 13, items 1, 2, 3, 5): images in answers and back in the history,
streams that repeat finishReason, every finish reason by name (never "stop" followed by an error), and Gemini 3's
function-call ids kept for the round trip. Through /v1/chat/completions with the official SDK and raw SSE."""
from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest

from tests.fake_gemini import Reply, stream_events, text_reply
from tests.support.openai_schema import validate

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"pixels" * 40).decode()
SIGNATURE = base64.b64encode(b"image-thought-signature").decode()
HELLO = [{"role": "user", "content": "draw a cat"}]


def image_reply(text: str = "Here is your cat.", signature: str | None = SIGNATURE, thought_image: bool = False,
                finish: str = "STOP") -> dict:
    parts: list[dict] = []
    if thought_image:  # a draft the model shows in its thinking: never part of the answer
        parts.append({"inlineData": {"mimeType": "image/png", "data": "ZHJhZnQ="}, "thought": True})
    if text:
        parts.append({"text": text})
    image: dict = {"inlineData": {"mimeType": "image/png", "data": PNG}}
    if signature:
        image["thoughtSignature"] = signature
    parts.append(image)
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1290, "totalTokenCount": 1295,
                              "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}]},
            "modelVersion": "gemini-2.5-flash-image", "responseId": "img1"}


def sse(text: str) -> tuple[list[dict], list[dict], bool]:
    """→ (chunks, error events, whether [DONE] came)."""
    chunks, errors = [], []
    for block in text.split("\n\n"):
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        if not data or data[0] == "[DONE]":
            continue
        obj = json.loads(data[0])
        (errors if "error" in obj else chunks).append(obj.get("error", obj))
    return chunks, errors, "data: [DONE]" in text


def post_stream(kl, body: dict) -> tuple[int, str]:
    with httpx.Client(timeout=30) as http:
        r = http.post(kl.url + "/v1/chat/completions", headers=kl.auth(), json={**body, "stream": True})
        return r.status_code, r.text


# -- 1. images in answers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["both", "images", "markdown"])
def test_an_image_answer_reaches_the_client(start_keyloom, fake, output):
    kl = start_keyloom(IMAGE_OUTPUT=output)
    fake.script.append(Reply(body=image_reply(thought_image=True)))
    raw = kl.client().chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=HELLO)
    body = json.loads(raw.http_response.text)
    validate("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    url = f"data:image/png;base64,{PNG}"
    if output != "markdown":
        assert message["images"] == [{"type": "image_url", "image_url": {"url": url}}]
    else:
        assert "images" not in message
    if output != "images":
        assert message["content"] == f"Here is your cat.\n\n![image]({url})"
    else:
        assert message["content"] == "Here is your cat."
    assert "ZHJhZnQ=" not in raw.http_response.text  # the thought's draft is not the answer
    assert body["usage"]["completion_tokens"] == 1290
    assert len(fake.generate_calls()) == 1  # an image answer is an answer, not an empty reply to retry


def test_an_image_only_answer_is_not_an_empty_reply(keyloom, fake):
    fake.script.append(Reply(body=image_reply(text="")))
    reply = keyloom.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
    assert reply.choices[0].message.content.startswith("![image](data:image/png;base64,")
    assert len(fake.generate_calls()) == 1


@pytest.mark.parametrize("fake_streaming", ["true", "false"])
def test_images_travel_in_stream_deltas(start_keyloom, fake, fake_streaming):
    kl = start_keyloom(FAKE_STREAMING=fake_streaming)
    reply = image_reply()
    fake.script.append(Reply(body=reply, events=[  # the text, then the image in its own event
        {**reply, "candidates": [{"content": {"role": "model", "parts": [{"text": "Here is your cat."}]},
                                  "index": 0}]},
        reply | {"candidates": [{**reply["candidates"][0], "content": {
            "role": "model", "parts": [reply["candidates"][0]["content"]["parts"][-1]]}}]}]))
    status, text = post_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO})
    chunks, errors, done = sse(text)
    assert status == 200 and not errors and done
    for c in chunks:
        validate("CreateChatCompletionStreamResponse", c)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    images = [i for d in deltas for i in d.get("images", [])]
    assert images == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == f"Here is your cat.\n\n![image](data:image/png;base64,{PNG})"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


@pytest.mark.parametrize("shape", ["markdown", "images"])
def test_an_image_sent_back_goes_upstream_as_the_image_with_its_signature(keyloom, fake, shape):
    fake.script.append(Reply(body=image_reply()))
    first = keyloom.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
    answer = first.choices[0].message
    if shape == "markdown":  # a client that keeps only the text (SillyTavern)
        assistant = {"role": "assistant", "content": answer.content}
    else:  # a client that keeps OpenRouter's `images`
        assistant = {"role": "assistant", "content": "Here is your cat.", "images": answer.model_extra["images"]}
    keyloom.client().chat.completions.create(model="gemini-2.5-flash", messages=[
        *HELLO, assistant, {"role": "user", "content": "now make it blue"}])
    sent = fake.generate_calls()[1].body["contents"]
    assert sent[1]["role"] == "model"
    assert sent[1]["parts"] == [{"text": "Here is your cat."},
                                {"inlineData": {"mimeType": "image/png", "data": PNG},
                                 "thoughtSignature": SIGNATURE}]
    assert "base64," not in json.dumps(sent)  # never megabytes of base64 billed as prompt text


def test_modalities_and_image_options_map_to_gemini(keyloom, fake):
    keyloom.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO,
                                             extra_body={"modalities": ["text", "image"],
                                                         "image_config": {"aspect_ratio": "16:9",
                                                                          "image_size": "2k"}})
    config = fake.generate_calls()[0].body["generationConfig"]
    assert config["responseModalities"] == ["TEXT", "IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    for bad in ({"modalities": ["smell"]}, {"image_config": {"aspect_ratio": "wide"}},
                {"image_config": {"image_size": "8K"}}, {"image_config": "big"}):
        with pytest.raises(openai.BadRequestError):
            keyloom.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO, extra_body=bad)
    assert len(fake.generate_calls()) == 1


# -- 2. streams that repeat finishReason ------------------------------------------------------------------

def test_a_stream_that_repeats_finish_reason_keeps_every_event(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    words = [f"word{i} " for i in range(30)]
    events = []
    for i, w in enumerate(words):  # Gemini 1.5 style: finishReason STOP on every event
        events.append({"candidates": [{"content": {"role": "model", "parts": [{"text": w}]}, "finishReason": "STOP",
                                       "index": 0}],
                       "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": i + 1,
                                         "totalTokenCount": i + 4}})
    fake.script.append(Reply(events=events))
    status, text = post_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO})
    chunks, errors, done = sse(text)
    assert status == 200 and not errors and done
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "".join(words)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# -- 3. every finish reason by name ------------------------------------------------------------------------

@pytest.mark.parametrize("reason, calls", [("MALFORMED_FUNCTION_CALL", 2), ("NO_IMAGE", 1),
                                           ("UNEXPECTED_TOOL_CALL", 1), ("A_REASON_FROM_2027", 1)])
def test_a_reply_that_went_wrong_is_an_error_naming_its_finish_reason(start_keyloom, fake, reason, calls):
    kl = start_keyloom(MAX_RETRY_NUM="6")
    fake.responder = lambda rec: Reply(body={"candidates": [{"content": {"role": "model", "parts": []},
                                                            "finishReason": reason,
                                                            "finishMessage": "Malformed function call: x"}]})
    with pytest.raises(openai.APIStatusError) as e:
        kl.client().chat.completions.create(model="gemini-2.5-flash", messages=HELLO)
    assert e.value.status_code == 502 and reason in e.value.message
    assert len(fake.generate_calls()) == calls  # the policy table's row for the reason, not six attempts


def test_a_stream_that_goes_wrong_after_its_text_ends_with_the_error_alone(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    events = stream_events(text_reply("I will call the tool now"), pieces=3)
    events[-1]["candidates"][0]["finishReason"] = "MALFORMED_FUNCTION_CALL"
    fake.script.append(Reply(events=events))
    status, text = post_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO})
    chunks, errors, done = sse(text)
    assert status == 200 and len(errors) == 1 and "MALFORMED_FUNCTION_CALL" in errors[0]["message"]
    assert not any(c["choices"][0]["finish_reason"] for c in chunks if c["choices"])  # no finish before the error
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).startswith("I will")
    assert not done


def test_a_one_event_stream_that_went_wrong_is_retried_before_anything_is_sent(start_keyloom, fake):
    kl = start_keyloom(FAKE_STREAMING="false")
    bad = text_reply("half a call")
    bad["candidates"][0]["finishReason"] = "MALFORMED_FUNCTION_CALL"
    fake.script.extend([Reply(events=[bad]), Reply(body=text_reply("second time right"))])
    status, text = post_stream(kl, {"model": "gemini-2.5-flash", "messages": HELLO})
    chunks, errors, done = sse(text)
    assert status == 200 and not errors and done
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        "second time right"
    assert "half a call" not in text and len(fake.generate_calls()) == 2


# -- 5. function call ids -----------------------------------------------------------------------------

def test_gemini_function_call_ids_come_back_on_the_call_and_its_response(keyloom, fake):
    call = {"functionCall": {"id": "fc-7f3a", "name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": SIGNATURE}
    fake.script.append(Reply(body={"candidates": [{"content": {"role": "model", "parts": [call]},
                                                   "finishReason": "STOP"}]}))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    first = keyloom.client().chat.completions.create(model="gemini-3-pro-preview", messages=HELLO, tools=tools)
    tc = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and tc.function.name == "get_weather"
    keyloom.client().chat.completions.create(model="gemini-3-pro-preview", tools=tools, messages=[
        *HELLO, {"role": "assistant", "content": None, "tool_calls": [tc.model_dump()]},
        {"role": "tool", "tool_call_id": tc.id, "content": '{"temp": 21}'}])
    sent = fake.generate_calls()[1].body["contents"]
    assert sent[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "fc-7f3a"},
                                 "thoughtSignature": SIGNATURE}]
    assert sent[2]["parts"] == [{"functionResponse": {"name": "get_weather", "response": {"content": {"temp": 21}},
                                                      "id": "fc-7f3a"}}]
