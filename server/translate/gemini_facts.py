"""What Gemini's replies mean, in one place: which parts are an answer, which finish reasons mean what.

Every module that judges a reply (the failure classifier, the dispatcher reading a stream, the
translators to each client dialect) asks here, so a new finish reason or part kind is one edit.

Finish reasons (google.ai.generativelanguage v1beta `Candidate.FinishReason`, 2025–2026):
  STOP, MAX_TOKENS                      the ordinary ends
  SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, LANGUAGE, IMAGE_SAFETY,
  IMAGE_PROHIBITED_CONTENT, IMAGE_RECITATION
                                         the output was filtered
  MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS, NO_IMAGE, IMAGE_OTHER, OTHER
                                         the reply went wrong: never reported as a finished answer
  FINISH_REASON_UNSPECIFIED             as good as none
Any reason not known here is treated as one that went wrong (named in the error), never as "stop".

Thought signatures refused: Gemini answers 400 INVALID_ARGUMENT when a thought signature in the history is
not one it accepts ("Corrupted thought signature.", Vertex AI's "Unable to submit request because Thought
signature is not valid", and "Function call is missing a thought_signature in functionCall parts" when one is
missing; seen in google-gemini/gemini-cli#13467, decolua/9router#301, lbjlaq/Antigravity-Manager#733).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

FinishKind = Literal["none", "stop", "length", "filtered", "abnormal"]

_SIGNATURE_WORDS = ("thought signature", "thought_signature", "thoughtsignature")


def is_signature_refusal(status: int, message: str) -> bool:
    """A 400 that refuses the thought signatures the request carries (another try with Google's placeholder
    signature can succeed)."""
    lower = message.lower()
    return status == 400 and any(w in lower for w in _SIGNATURE_WORDS)


FILTERED = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
})

# What an abnormal end means, for the error a client gets (the reason itself is always named too).
ABNORMAL_MEANING = {
    "MALFORMED_FUNCTION_CALL": "the model wrote a function call that does not parse or fit the declared tools",
    "UNEXPECTED_TOOL_CALL": "the model called a tool although the request allowed none",
    "TOO_MANY_TOOL_CALLS": "the model made more tool calls in one turn than Gemini allows",
    "NO_IMAGE": "the image model produced no image for this prompt",
    "IMAGE_OTHER": "the image model stopped without an image for a reason Gemini does not name",
    "OTHER": "Gemini stopped for a reason it does not name",
}


def finish_kind(reason: Any) -> FinishKind:
    if not reason or reason == "FINISH_REASON_UNSPECIFIED":
        return "none"
    if reason == "STOP":
        return "stop"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "filtered"
    return "abnormal"


def abnormal_message(reason: str, finish_message: Any = None) -> str:
    meaning = ABNORMAL_MEANING.get(reason, "an end Keyloom does not know")
    extra = f" ({finish_message})" if isinstance(finish_message, str) and finish_message else ""
    return f"Gemini ended the reply with finishReason {reason}: {meaning}{extra}"


def is_answer_part(part: Mapping[str, Any]) -> bool:
    """A part that answers (as opposed to a thought, or nothing): visible text, a function call, an image or
    other inline data, code the model ran or its result."""
    if part.get("thought"):
        return False
    if "functionCall" in part or "inlineData" in part or "executableCode" in part or "codeExecutionResult" in part \
            or "fileData" in part:
        return True
    return bool(part.get("text"))


def candidate_parts(candidate: Any) -> list[dict[str, Any]]:
    content = candidate.get("content") if isinstance(candidate, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts or () if isinstance(p, dict)]


# Model ids that are not chat models though Google lists them with generateContent: image and speech models,
# Live API models, embedding models. They take no thinking settings and no search tool.
NOT_CHAT_MARKERS = ("-image", "-tts", "-live", "native-audio", "embedding")


def is_chat_model(mid: str) -> bool:
    m = mid.lower()
    return not any(x in m for x in NOT_CHAT_MARKERS)


def is_imagen(mid: str) -> bool:
    """Imagen models: images from `:predict`, not from generateContent."""
    return mid.lower().removeprefix("models/").startswith("imagen-")


def _inline_of(part: Mapping[str, Any], kind: str) -> tuple[str, str] | None:
    """(mime type, base64 data) of inline data of `kind` ("image/", "audio/") the model produced (not a
    thought's draft), else None."""
    blob = part.get("inlineData")
    if part.get("thought") or not isinstance(blob, dict):
        return None
    mime, data = blob.get("mimeType"), blob.get("data")
    if isinstance(mime, str) and mime.startswith(kind) and isinstance(data, str) and data:
        return mime, data
    return None


def audio_of(part: Mapping[str, Any]) -> tuple[str, str] | None:
    """Audio the model produced (TTS models: `audio/L16;codec=pcm;rate=24000`)."""
    return _inline_of(part, "audio/")


def has_answer(candidate: Any) -> bool:
    return any(is_answer_part(p) for p in candidate_parts(candidate))


def image_of(part: Mapping[str, Any]) -> tuple[str, str] | None:
    """An image the model produced."""
    return _inline_of(part, "image/")
