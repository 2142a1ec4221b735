"""Gemini replies → Anthropic Messages API `message` objects and stream events. Pure: dicts in, dicts out.

Shapes follow anthropic-sdk-python's `types/message.py` and `types/raw_*_event.py` (the shared reference,
`anthropic-messages.md` §3–§4). One state machine, `MessageStream`, turns Gemini parts into content blocks;
`message()` runs a whole reply through it and returns the blocks it built, so a streamed reply, a fake-
streamed one and a whole one always give the same message.

Blocks:
- thought parts → a `thinking` block (consecutive thoughts are one block; a thought carrying a signature ends
  its block, the signature as the block's `signature`, sent as one `signature_delta` right before
  `content_block_stop`). Thought text arrives only when the request asked for summaries.
- text → a `text` block; code Gemini ran and its result → fenced text; images Gemini drew → Markdown data-URL
  images in the text (a Messages response has no image block; the request side turns them back into images,
  and their signatures live in `signatures.ImageSignatures`, fed by the caller as on the chat side).
- a signature Gemini puts on an answer part (Gemini 2.5 signs the first part after its thoughts, Gemini 3
  the last part of an answer) has no field on a text block: it becomes a `thinking` block with empty
  `thinking` and that `signature`, right before the text it signs when that text starts a block, else right
  after it (the text block is closed first). `anthropic_to_gemini` puts it back on that part.
- function calls → `tool_use` blocks whose id carries Gemini's call id and the sealed signature (the Chat
  Completions scheme, `make_tool_call_id`, with a `toolu_` prefix); Gemini sends a call whole, so its
  `input` goes out as one `input_json_delta`.
- Google Search sources → a "Sources:" list appended to the text, as on the chat side (Anthropic's
  web-search citations need Anthropic's encrypted indexes, which Keyloom cannot make).

Every signature is sealed with the fingerprint of the key that answered (`signatures.seal`).

`stop_reason`: STOP → `end_turn`, or `tool_use` when a function was called; MAX_TOKENS → `max_tokens`;
filtered (SAFETY, RECITATION, …) → `refusal` (with `stop_details`). Gemini says STOP also when it met a stop
sequence and never says which, so `stop_sequence` is never reported (always null, `end_turn`).

`usage`: input_tokens = prompt − cached, cache_read_input_tokens = Gemini's cachedContentTokenCount,
cache_creation_input_tokens = 0 (Gemini's implicit cache has no creation charge), output_tokens = answer +
thoughts (`output_tokens_details.thinking_tokens` the thoughts).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import ujson

from ..signatures import seal
from .gemini_facts import candidate_parts, finish_kind
from .gemini_to_openai import _split_parts, grounding_sources, random_id, sources_text, token_counts
from .openai_to_gemini import make_tool_call_id

TOOL_ID_PREFIX = "toolu_"
_STOP_REASONS = {"stop": "end_turn", "none": "end_turn", "length": "max_tokens", "filtered": "refusal"}


def tool_use_id(random_part: str, signature: str | None, gemini_id: str | None = None) -> str:
    """`toolu_<random>[__id__<gemini id>][__thought__<signature>]`: the chat side's tool-call id with
    Anthropic's prefix, so `split_tool_call_id` and `gemini_call_id` read it unchanged."""
    return TOOL_ID_PREFIX + make_tool_call_id(random_part, signature, gemini_id).removeprefix("call_")


def stop_reason(gemini_finish: Any, has_tool_use: bool) -> str:
    """The Anthropic stop_reason of a reply that ended normally or was filtered. A reply that went wrong
    (gemini_facts' "abnormal" reasons) never gets here: the dispatcher turns it into a failure first."""
    kind = finish_kind(gemini_finish)
    if kind == "abnormal":
        raise ValueError(f"finishReason {gemini_finish} is a failure, not an end of an answer")
    if has_tool_use and kind in ("stop", "none"):
        return "tool_use"
    return _STOP_REASONS[kind]


def usage(meta: Any) -> dict[str, Any]:
    """Gemini usageMetadata → a Messages `usage` (zeros when there is none yet)."""
    prompt, output, thoughts = token_counts(meta)
    cached = int(meta.get("cachedContentTokenCount") or 0) if isinstance(meta, dict) else 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"thinking_tokens": thoughts},
        "service_tier": "standard",
    }


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """An Anthropic error object (the HTTP body, or the data of an `error` stream event). `request_id` is
    optional in the SDK's type; the `request-id` header carries the same value."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


def _json(value: Any) -> str:
    return ujson.dumps(value, ensure_ascii=False, escape_forward_slashes=False)


class MessageStream:
    """Gemini reply events (many, or one whole reply for fake streaming) → Messages stream events.

    Keeps what the Anthropic stream needs: the blocks built so far (the final message's `content`), which
    block is open, the last usage and finish reason seen (older models repeat finishReason on every event:
    every event's content is kept, and the stream ends only in `finish()`, which the caller calls once the
    upstream stream ended well: a failure must end the stream with an error alone), and the sources of a
    grounded answer. Only the first candidate counts: a Messages response has one.
    """

    def __init__(self, *, model: str, message_id: str, new_id: Callable[[], str] = random_id):
        self.model = model
        self.message_id = message_id
        self.new_id = new_id
        self.key_fp: str | None = None  # the key that answered, once known (seals thought signatures)
        self._started = False
        self._content: list[dict[str, Any]] = []
        self._open: str | None = None  # type of the open block: "text" or "thinking"
        self._meta: Any = None
        self._reason: Any = None
        self._blocked = False
        self._tool_use = False
        self._sources: list[tuple[str, str]] = []

    # -- events ---------------------------------------------------------------------------------

    def _message(self, content: list[dict[str, Any]], reason: str | None, meta: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                               "content": content, "stop_reason": reason, "stop_sequence": None,
                               "usage": usage(meta)}
        if reason == "refusal":
            out["stop_details"] = self._refusal()
        return out

    def _refusal(self) -> dict[str, Any]:
        why = f"Gemini filtered the reply (finishReason {self._reason})" if self._reason \
            else "Gemini blocked the prompt"
        return {"type": "refusal", "category": None, "explanation": why}

    def start(self) -> list[dict[str, Any]]:
        """`message_start` (once): no content yet, usage zero; the final message_delta carries the real one."""
        if self._started:
            return []
        self._started = True
        return [{"type": "message_start", "message": self._message([], None, None)}]

    def _open_block(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close()
        self._content.append(copy.deepcopy(block))
        if block["type"] in ("text", "thinking"):
            self._open = block["type"]
        return out + [{"type": "content_block_start", "index": len(self._content) - 1, "content_block": block}]

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        block = self._content[-1]
        kind = delta["type"]
        if kind == "text_delta":
            block["text"] += delta["text"]
        elif kind == "thinking_delta":
            block["thinking"] += delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        return {"type": "content_block_delta", "index": len(self._content) - 1, "delta": delta}

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": len(self._content) - 1}]

    def _signature_block(self, signature: str) -> list[dict[str, Any]]:
        out = self._open_block({"type": "thinking", "thinking": "", "signature": ""})
        out.append(self._delta({"type": "signature_delta", "signature": signature}))
        return out + self._close()

    def _text(self, text: str) -> list[dict[str, Any]]:
        out = [] if self._open == "text" else self._open_block({"type": "text", "text": ""})
        return out + [self._delta({"type": "text_delta", "text": text})]

    # -- parts ----------------------------------------------------------------------------------

    def _part(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        raw = part.get("thoughtSignature")
        signature = seal(raw, self.key_fp) if isinstance(raw, str) and raw else None
        call = part.get("functionCall")
        if isinstance(call, dict):
            args = call.get("args") if isinstance(call.get("args"), dict) else {}
            block_id = tool_use_id(self.new_id(), signature, call["id"] if isinstance(call.get("id"), str) else None)
            out = self._open_block({"type": "tool_use", "id": block_id, "name": str(call.get("name", "")),
                                    "input": {}})
            self._content[-1]["input"] = copy.deepcopy(args)
            out.append({"type": "content_block_delta", "index": len(self._content) - 1,
                        "delta": {"type": "input_json_delta", "partial_json": _json(args)}})
            out.append({"type": "content_block_stop", "index": len(self._content) - 1})
            self._tool_use = True
            return out
        if part.get("thought"):
            text = part.get("text") if isinstance(part.get("text"), str) else ""
            out = [] if self._open == "thinking" else self._open_block({"type": "thinking", "thinking": "",
                                                                         "signature": ""})
            if text:
                out.append(self._delta({"type": "thinking_delta", "thinking": text}))
            if signature:  # a signed thought ends its block
                out.append(self._delta({"type": "signature_delta", "signature": signature}))
                out.extend(self._close())
            return out
        # Text, an image, code: as text (images as Markdown), through the chat side's rendering.
        text_before = self._open == "text" and bool(self._content[-1]["text"])
        text = "".join(_split_parts([part], self.new_id, "markdown", text_before)[0])
        if signature is None:
            return self._text(text) if text else []
        if self._open == "text":  # the signature ends the answer text it came with
            out = self._text(text) if text else []
            return out + self._close() + self._signature_block(signature)
        out = self._signature_block(signature)  # the signature opens the text it came with
        return out + (self._text(text) if text else [])

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One Gemini stream event (or a whole reply) → the stream events it makes."""
        out = self.start()
        if isinstance(event.get("usageMetadata"), dict):
            self._meta = event["usageMetadata"]
        feedback = event.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self._blocked = True
        candidates = event.get("candidates")
        cand = next((c for c in candidates if isinstance(c, dict)), None) if isinstance(candidates, list) else None
        if cand is None:
            return out
        for part in candidate_parts(cand):
            out.extend(self._part(part))
        if cand.get("finishReason"):
            self._reason = cand["finishReason"]
        found = grounding_sources(cand)
        if found:
            self._sources = found
        return out

    def _stop_reason(self) -> str:
        if self._blocked and not self._reason and not self._content:
            return "refusal"
        return stop_reason(self._reason, self._tool_use)

    def finish(self) -> list[dict[str, Any]]:
        """The closing events: the sources of a grounded answer, `content_block_stop` for the open block,
        `message_delta` (stop reason, the whole usage) and `message_stop`."""
        out = self.start()
        if self._sources:
            out.extend(self._text(sources_text(self._sources, 0)[0]))
            self._sources = []
        out.extend(self._close())
        reason = self._stop_reason()
        delta: dict[str, Any] = {"stop_reason": reason, "stop_sequence": None}
        if reason == "refusal":
            delta["stop_details"] = self._refusal()
        whole = usage(self._meta)
        out.append({"type": "message_delta", "delta": delta,
                    "usage": {k: whole[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                                    "cache_read_input_tokens", "output_tokens",
                                                    "output_tokens_details")}})
        out.append({"type": "message_stop"})
        return out

    def message(self) -> dict[str, Any]:
        """The message the events so far describe (after `finish()`: the whole one)."""
        return self._message(copy.deepcopy(self._content), self._stop_reason(), self._meta)


def message(reply: Mapping[str, Any], *, model: str, message_id: str, key_fp: str | None = None,
            new_id: Callable[[], str] = random_id) -> dict[str, Any]:
    """A whole Gemini reply → a Messages API `message`. `key_fp`: the key that answered (seals signatures)."""
    stream = MessageStream(model=model, message_id=message_id, new_id=new_id)
    stream.key_fp = key_fp
    stream.feed(reply)
    stream.finish()
    return stream.message()
