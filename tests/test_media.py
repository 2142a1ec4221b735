"""Images (/v1/images/generations, /v1/images/edits) and speech (/v1/audio/speech) through the pool, with the
official openai SDK: Gemini image models and Imagen, n images, sizes as aspect ratios, edits from multipart
uploads, wav and pcm from Gemini's PCM; counted, retried and logged like every other call."""
from __future__ import annotations

import base64
import io
import json
import wave

import openai
import pytest

from server.translate import images_api, speech_api
from server.translate.gemini_body import TranslationError
from tests.conftest import KEYS
from tests.fake_gemini import DEFAULT_MODELS, MEDIA_MODELS, Reply, fake_png, image_reply, speech_reply
from tests.support.openai_schema import validate


@pytest.fixture
def media(fake):
    fake.models = [*DEFAULT_MODELS, *MEDIA_MODELS]
    yield fake
    fake.models = list(DEFAULT_MODELS)


# -- the pure pieces ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "ratio"), [("1024x1024", "1:1"), ("1536x1024", "3:2"), ("1024x1536", "2:3"),
                                             ("1792x1024", "16:9"), ("1024x1792", "9:16"), ("16:9", "16:9"),
                                             ("auto", None), (None, None)])
def test_sizes_become_aspect_ratios(size, ratio):
    assert images_api.aspect_ratio(size) == ratio


def test_imagen_takes_only_its_own_ratios_and_odd_sizes_are_refused():
    assert images_api.aspect_ratio("1536x1024", images_api.IMAGEN_RATIOS) == "4:3"
    for bad in ("huge", "10x1", "0x0", 7):
        with pytest.raises(TranslationError) as e:
            images_api.aspect_ratio(bad)
        assert e.value.param == "size"


def test_openai_voices_map_to_gemini_voices_and_gemini_names_pass():
    assert speech_api.voice("alloy") == "Zephyr" and speech_api.voice("KORE") == "Kore"
    assert speech_api.voice({"id": "nova"}) == "Kore"
    with pytest.raises(TranslationError):
        speech_api.voice("no-such-voice")


def test_wav_is_the_pcm_behind_a_header():
    pcm = bytes(range(256)) * 4
    with wave.open(io.BytesIO(speech_api.wav_bytes(pcm, 24000))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        assert w.readframes(w.getnframes()) == pcm


# -- images through Keyloom ------------------------------------------------------------------------

def test_a_gemini_image_model_draws_n_images_in_parallel_calls(start_keyloom, media):
    kl = start_keyloom()
    media.responder = lambda rec: Reply(body=image_reply(rec.body["contents"][0]["parts"][0]["text"],
                                                         len(media.generate_calls())))
    raw = kl.client().images.with_raw_response.generate(model="gemini-2.5-flash-image", prompt="a red fox", n=2,
                                                        size="1792x1024")
    body = json.loads(raw.http_response.text)
    validate("ImagesResponse", body)
    assert len(body["data"]) == 2
    assert {base64.b64decode(d["b64_json"]) for d in body["data"]} == {
        base64.b64decode(fake_png("a red fox", 1)), base64.b64decode(fake_png("a red fox", 2))}
    calls = media.generate_calls("gemini-2.5-flash-image")
    assert len(calls) == 2 and {c.key for c in calls} <= set(KEYS)
    cfg = calls[0].body["generationConfig"]
    assert cfg["responseModalities"] == ["TEXT", "IMAGE"] and cfg["imageConfig"] == {"aspectRatio": "16:9"}


def test_imagen_draws_through_predict(start_keyloom, media):
    kl = start_keyloom()
    r = kl.client().images.generate(model="imagen-4.0-generate-001", prompt="a lighthouse", n=3, size="1024x1024")
    assert [base64.b64decode(d.b64_json) for d in r.data] == [base64.b64decode(fake_png("a lighthouse", i))
                                                              for i in range(3)]
    call = [c for c in media.requests if c.action == "predict"][0]
    assert call.body == {"instances": [{"prompt": "a lighthouse"}],
                         "parameters": {"sampleCount": 3, "aspectRatio": "1:1"}}


def test_url_answers_carry_a_data_url(start_keyloom, media):
    kl = start_keyloom()
    media.script.append(Reply(body=image_reply("x")))
    r = kl.client().images.generate(model="gemini-2.5-flash-image", prompt="x", response_format="url")
    assert r.data[0].url == "data:image/png;base64," + fake_png("x")


def test_an_image_model_that_only_talks_is_a_clear_error(start_keyloom, media):
    kl = start_keyloom()
    text_only = image_reply("x")
    text_only["candidates"][0]["content"]["parts"] = [{"text": "I can't draw that."}]
    media.script.append(Reply(body=text_only))
    with pytest.raises(openai.APIStatusError) as e:
        kl.client().images.generate(model="gemini-2.5-flash-image", prompt="x")
    assert e.value.status_code == 502 and "I can't draw that." in e.value.message


def test_edits_from_a_multipart_upload_go_up_as_the_images(start_keyloom, media):
    kl = start_keyloom()
    media.script.append(Reply(body=image_reply("edited")))
    png = b"\x89PNG\r\n\x1a\nsource-image"
    r = kl.client().images.edit(model="gemini-2.5-flash-image", prompt="make it blue",
                                image=[("a.png", png, "image/png"), ("b.png", png + b"2", "image/png")])
    assert base64.b64decode(r.data[0].b64_json) == base64.b64decode(fake_png("edited"))
    parts = media.generate_calls()[-1].body["contents"][0]["parts"]
    assert parts[0] == {"text": "make it blue"}
    assert [base64.b64decode(p["inlineData"]["data"]) for p in parts[1:]] == [png, png + b"2"]


def test_bad_image_requests_are_400s_before_any_call(start_keyloom, media):
    kl = start_keyloom()
    with kl.http() as h:
        for body, param in (({"model": "gemini-2.5-flash-image"}, "prompt"),
                            ({"model": "gemini-2.5-flash-image", "prompt": "x", "n": 9}, "n"),
                            ({"model": "gemini-2.5-flash-image", "prompt": "x", "size": "12x1"}, "size"),
                            ({"model": "gemini-2.5-flash-image", "prompt": "x", "response_format": "gif"},
                             "response_format")):
            r = h.post("/v1/images/generations", headers=kl.auth(), json=body)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, body
        r = h.post("/v1/images/generations", headers=kl.auth(), json={"model": "no-such-model", "prompt": "x"})
        assert r.status_code == 404
    assert media.generate_calls() == []


def test_images_are_retried_on_another_key_and_logged(start_keyloom, media, loop_thread):
    kl = start_keyloom()
    media.script.extend([Reply(status=503), Reply(body=image_reply("y"))])
    kl.client().images.generate(model="gemini-2.5-flash-image", prompt="y")
    calls = media.generate_calls()
    assert len(calls) == 2 and calls[0].key != calls[1].key
    loop_thread.run(kl.kl.flusher.flush())
    rows = loop_thread.run(kl.kl.db.fetchall("SELECT model, status, attempts FROM request_log"))
    assert rows == [("gemini-2.5-flash-image", 200, 2)]


# -- speech through Keyloom ------------------------------------------------------------------------

def test_speech_as_wav_and_pcm(start_keyloom, media):
    kl = start_keyloom()
    pcm = b"\x01\x00\x02\x00" * 100
    media.script.extend([Reply(body=speech_reply(pcm)), Reply(body=speech_reply(pcm, 22050))])
    audio = kl.client().audio.speech.create(model="gemini-2.5-flash-preview-tts", voice="alloy",
                                            input="Hello from Keyloom", response_format="wav")
    with wave.open(io.BytesIO(audio.content)) as w:
        assert w.getframerate() == 24000 and w.readframes(w.getnframes()) == pcm
    assert audio.response.headers["content-type"] == "audio/wav"
    sent = media.generate_calls()[-1].body
    assert sent["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Zephyr"
    assert sent["contents"][0]["parts"][0]["text"] == "Hello from Keyloom"
    raw = kl.client().audio.speech.create(model="gemini-2.5-flash-preview-tts", voice="Puck", input="hi",
                                          response_format="pcm")
    assert raw.content == pcm and raw.response.headers["content-type"] == "audio/pcm;rate=22050"


def test_speech_formats_gemini_cannot_give_are_refused_clearly(start_keyloom, media):
    kl = start_keyloom()
    with pytest.raises(openai.BadRequestError) as e:
        kl.client().audio.speech.create(model="gemini-2.5-flash-preview-tts", voice="alloy", input="hi",
                                        response_format="mp3")
    assert "wav or pcm" in e.value.message
    assert media.generate_calls() == []


def test_speech_aliases_for_openai_model_names(start_keyloom, media):
    kl = start_keyloom(MODEL_ALIASES="tts-1*=gemini-2.5-flash-preview-tts,dall-e-3=gemini-2.5-flash-image")
    media.script.extend([Reply(body=speech_reply(b"\x00\x00")), Reply(body=image_reply("z"))])
    kl.client().audio.speech.create(model="tts-1-hd", voice="nova", input="hi")
    kl.client().images.generate(model="dall-e-3", prompt="z")
    assert [c.model for c in media.generate_calls()] == ["gemini-2.5-flash-preview-tts", "gemini-2.5-flash-image"]


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/images/generations", {"model": "gemini-2.5-flash-image", "prompt": "x", "quality": []}),
    ("/v1/images/generations", {"model": "gemini-2.5-flash-image", "prompt": "x", "size": "²x1"}),
    ("/v1/images/generations", {"model": "gemini-2.5-flash-image", "prompt": "x", "size": "1" + "0" * 400 + "x1"}),
    ("/v1/images/generations", {"model": "imagen-4.0-generate-001", "prompt": "x", "size": "9" * 5000 + "x1"}),
    ("/v1/images/generations", {"model": "gemini-2.5-flash-image", "prompt": "x", "response_format": ["url"]}),
    ("/v1/audio/speech", {"model": "gemini-2.5-flash-preview-tts", "input": "hi", "voice": "alloy",
                          "response_format": []}),
])
def test_odd_values_are_400s_not_500s(start_keyloom, media, path, body):
    kl = start_keyloom()
    with kl.http() as h:
        r = h.post(path, headers=kl.auth(), json=body)
    assert r.status_code == 400 and "Traceback" not in r.text, r.text
