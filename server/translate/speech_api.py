"""OpenAI's `/v1/audio/speech` ⇄ Gemini's speech models (gemini-2.5-flash-preview-tts, …). Pure.

Gemini speaks through generateContent with `responseModalities: ["AUDIO"]` and a prebuilt voice, and answers
raw PCM (16-bit little-endian, mono, 24 kHz: `audio/L16;codec=pcm;rate=24000`). Keyloom hands that on as
`pcm`, or as `wav` (the same samples behind a 44-byte header, which the standard library's `wave` writes).
MP3, Opus, AAC and FLAC would need an encoder with a native toolchain; they are refused with a clear
message rather than faked, and since OpenAI's own default is mp3, a request that names no format gets wav.

OpenAI's voices map to Gemini voices of a similar character (Google's voice list describes each: Kore
"firm", Puck "upbeat", …); a Gemini voice name is taken as it is. `instructions` (gpt-4o-mini-tts's style
prompt) is said to the model before the text, as Google's guide for controllable speech does it; `speed`
has no Gemini setting and is refused when it is not 1.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import wave
from collections.abc import Mapping
from typing import Any

from .gemini_body import SAFETY_CATEGORIES, TranslationError
from .gemini_facts import audio_of, candidate_parts

MAX_INPUT = 4096  # OpenAI's limit for input, kept so clients get the same refusal
FORMATS = {"wav": "audio/wav", "pcm": "audio/pcm"}
UNSUPPORTED_FORMATS = ("mp3", "opus", "aac", "flac")

# Gemini's prebuilt voices (ai.google.dev/gemini-api/docs/speech-generation#voices)
GEMINI_VOICES = ("Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe", "Autonoe",
                 "Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib", "Rasalgethi",
                 "Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima", "Achird",
                 "Zubenelgenubi", "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat")
OPENAI_VOICES = {"alloy": "Zephyr", "ash": "Orus", "ballad": "Enceladus", "coral": "Aoede", "echo": "Puck",
                 "fable": "Leda", "nova": "Kore", "onyx": "Charon", "sage": "Sulafat", "shimmer": "Despina",
                 "verse": "Fenrir", "marin": "Achernar", "cedar": "Algieba"}
_BY_LOWER = {v.lower(): v for v in GEMINI_VOICES}
_RATE = re.compile(r"rate=(\d+)")
DEFAULT_RATE = 24000


def voice(name: Any) -> str:
    if isinstance(name, dict):  # the newer API's {"id": …}
        name = name.get("id")
    if not isinstance(name, str) or not name:
        raise TranslationError("voice is required (alloy, nova, … or a Gemini voice such as Kore)", "voice")
    found = OPENAI_VOICES.get(name.lower()) or _BY_LOWER.get(name.lower())
    if found is None:
        raise TranslationError(f"voice {name[:40]!r} is neither an OpenAI voice ({', '.join(OPENAI_VOICES)}) nor a "
                               f"Gemini voice ({', '.join(GEMINI_VOICES)})", "voice")
    return found


def audio_format(req: Mapping[str, Any]) -> str:
    fmt = req.get("response_format")
    if fmt is None:
        return "wav"
    if not isinstance(fmt, str):
        raise TranslationError("response_format must be wav or pcm", "response_format")
    if fmt in UNSUPPORTED_FORMATS:
        raise TranslationError(f"response_format {fmt} is not available here: Gemini speaks raw PCM, which "
                               "Keyloom returns as wav or pcm", "response_format")
    if fmt not in FORMATS:
        raise TranslationError("response_format must be wav or pcm", "response_format")
    return str(fmt)


def speech_request(req: Mapping[str, Any]) -> dict[str, Any]:
    text = req.get("input")
    if not isinstance(text, str) or not text.strip():
        raise TranslationError("input is required: the text to speak", "input")
    if len(text) > MAX_INPUT:
        raise TranslationError(f"input is longer than {MAX_INPUT} characters", "input")
    speed = req.get("speed")
    if speed is not None and speed != 1 and speed != 1.0:
        raise TranslationError("speed cannot be set for Gemini's voices (only 1); ask for a pace in "
                               "instructions instead", "speed")
    style = req.get("instructions")
    if style is not None and not isinstance(style, str):
        raise TranslationError("instructions must be a string", "instructions")
    said = f"{style.strip()}: {text}" if style and style.strip() else text
    return {"contents": [{"role": "user", "parts": [{"text": said}]}],
            "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": {
                "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voice(req.get("voice"))}}}},
            "safetySettings": [{"category": c, "threshold": "BLOCK_NONE"} for c in SAFETY_CATEGORIES]}


def pcm_of(reply: Mapping[str, Any]) -> tuple[bytes, int] | None:
    """(PCM samples, sample rate) of a speech reply; None when it holds no audio. Several audio parts (a long
    text, or stream events) are one run of samples, decoded each and joined."""
    chunks: list[bytes] = []
    rate = DEFAULT_RATE
    for cand in reply.get("candidates") or ():
        for part in candidate_parts(cand):
            found = audio_of(part)
            if found is not None:
                m = _RATE.search(found[0])
                rate = int(m.group(1)) if m else rate
                try:
                    chunks.append(base64.b64decode(found[1], validate=True))
                except (binascii.Error, ValueError):
                    return None
    if not chunks:
        return None
    return b"".join(chunks), rate


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """16-bit mono PCM behind a WAV header."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()
