"""Gemini replies → OpenAI `chat.completion` and `chat.completion.chunk` objects. Pure.

Shapes follow the OpenAI spec's `CreateChatCompletionResponse` and
`CreateChatCompletionStreamResponse`. Thought parts go to `reasoning_content`
(what SillyTavern and DeepSeek-style clients read), never into `content`.
A function call gets an id that carries Gemini's own call id and thought signature (see
openai_to_gemini.make_tool_call_id) and `finish_reason: "tool_calls"`.
Images the model drew go to `message.images` (the shape OpenRouter and LiteLLM use) and, for clients
that only show text, into `content` as Markdown images: `image_output` says which.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import ujson

from ..signatures import seal
from .gemini_facts import finish_kind, image_of
from .openai_to_gemini import make_tool_call_id

IMAGE_OUTPUTS = ("both", "images", "markdown")
_OPENAI_FINISH = {"stop": "stop", "none": "stop", "length": "length", "filtered": "content_filter"}


def random_id() -> str:
    return os.urandom(12).hex()


def finish_reason(gemini_reason: Any, has_tool_calls: bool) -> str:
    """OpenAI's finish_reason for a reply that ended normally (or was filtered). A reply that went wrong
    (gemini_facts' "abnormal" reasons) never gets here: the dispatcher turns it into a failure first."""
    kind = finish_kind(gemini_reason)
    if kind == "abnormal":
        raise ValueError(f"finishReason {gemini_reason} is a failure, not an end of an answer")
    if has_tool_calls and kind in ("stop", "none"):
        return "tool_calls"
    return _OPENAI_FINISH[kind]


def token_counts(meta: Any) -> tuple[int, int, int]:
    """Gemini usageMetadata → (prompt tokens, completion tokens with thoughts, thought tokens).
    The one place that decides how Gemini's counts map to OpenAI's (and to Keyloom's counters)."""
    if not isinstance(meta, dict):
        return 0, 0, 0
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return prompt, int(meta.get("candidatesTokenCount") or 0) + thoughts, thoughts


def usage(meta: Any) -> dict[str, Any] | None:
    if not isinstance(meta, dict):
        return None
    prompt, completion, thoughts = token_counts(meta)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(meta.get("cachedContentTokenCount") or 0)},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def image_url(mime: str, data: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def image_markdown(mime: str, data: str) -> str:
    return f"![image](data:{mime};base64,{data})"


def _split_parts(parts: Any, new_id: Callable[[], str], image_output: str = "both", text_before: bool = False,
                 key_fp: str | None = None) -> tuple[list[str], list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """→ (text pieces, thought pieces, tool calls without index, images as `image_url` objects). With
    `image_output` "markdown" or "both", images are also text pieces, where they came, set apart from the
    text around them by a blank line (`text_before`: text came before these parts, in an earlier event).
    A function call's thought signature rides in its id, sealed with `key_fp`, the key that answered."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    after_image = False
    for p in parts or ():
        if not isinstance(p, dict):
            continue
        picture = image_of(p)
        if picture is not None:
            if image_output != "markdown":
                images.append(image_url(*picture))
            if image_output != "images":
                texts.append(("\n\n" if texts or text_before else "") + image_markdown(*picture))
                after_image = True
            continue
        if after_image and isinstance(p.get("text"), str) and p["text"] and not p.get("thought"):
            texts.append("\n\n")
        after_image = after_image and not (isinstance(p.get("text"), str) and not p.get("thought"))
        if "functionCall" in p and isinstance(p["functionCall"], dict):
            fc = p["functionCall"]
            calls.append({
                "id": make_tool_call_id(new_id(), _sealed(p.get("thoughtSignature"), key_fp),
                                        fc["id"] if isinstance(fc.get("id"), str) else None),
                "type": "function",
                "function": {"name": str(fc.get("name", "")),
                             "arguments": ujson.dumps(fc.get("args") or {}, ensure_ascii=False,
                                                      escape_forward_slashes=False)},
            })
        elif isinstance(p.get("text"), str):
            (thoughts if p.get("thought") else texts).append(p["text"])
        elif isinstance(p.get("executableCode"), dict):
            code = p["executableCode"]
            texts.append(f"\n```{str(code.get('language', '')).lower()}\n{code.get('code', '')}\n```\n")
        elif isinstance(p.get("codeExecutionResult"), dict):
            texts.append(f"\n```\n{p['codeExecutionResult'].get('output', '')}\n```\n")
    return texts, thoughts, calls, images


def _sealed(signature: Any, key_fp: str | None) -> str | None:
    return seal(signature, key_fp) if isinstance(signature, str) and signature else None


def grounding_sources(cand: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(title, uri) of each web source Google Search grounding used, in order, without repeats."""
    meta = cand.get("groundingMetadata")
    out: list[tuple[str, str]] = []
    if not isinstance(meta, dict):
        return out
    for chunk in meta.get("groundingChunks") or ():
        web = chunk.get("web") if isinstance(chunk, dict) else None
        if isinstance(web, dict) and isinstance(web.get("uri"), str) and web["uri"]:
            item = (str(web.get("title") or web["uri"]), web["uri"])
            if item not in out:
                out.append(item)
    return out


def sources_text(sources: list[tuple[str, str]], offset: int) -> tuple[str, list[dict[str, Any]]]:
    """The source list appended to a grounded answer, and its OpenAI `url_citation` annotations
    (character offsets into the whole content, which starts `offset` characters before the list)."""
    text = "\n\nSources:"
    notes = []
    for n, (title, uri) in enumerate(sources, 1):
        line = f"\n{n}. [{title}]({uri})"
        start = offset + len(text) + len(f"\n{n}. ")
        notes.append({"type": "url_citation", "url_citation": {"url": uri, "title": title, "start_index": start,
                                                              "end_index": offset + len(text) + len(line)}})
        text += line
    return text, notes


def completion(reply: Mapping[str, Any], *, model: str, created: int,
               new_id: Callable[[], str] = random_id, image_output: str = "both",
               key_fp: str | None = None) -> dict[str, Any]:
    """A whole Gemini reply → `chat.completion`. `key_fp`: the key that answered (seals its signatures)."""
    choices = []
    citations: list[str] = []
    for pos, cand in enumerate(reply.get("candidates") or ()):
        if not isinstance(cand, dict):
            continue
        content = cand.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        texts, thoughts, calls, images = _split_parts(parts, new_id, image_output, key_fp=key_fp)
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(texts) if (texts or not calls) else None,
                                   "refusal": None}
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if calls:
            message["tool_calls"] = calls
        if images:
            message["images"] = images
        found = grounding_sources(cand)
        if found:
            text = message["content"] or ""
            extra, notes = sources_text(found, len(text))
            message["content"] = text + extra
            message["annotations"] = notes
            citations.extend(uri for _, uri in found if uri not in citations)
        choices.append({
            "index": int(cand.get("index", pos) or 0),
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason(cand.get("finishReason") or "STOP", bool(calls)),
        })
    out: dict[str, Any] = {
        "id": "chatcmpl-" + (str(reply.get("responseId")) if reply.get("responseId") else new_id()),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    u = usage(reply.get("usageMetadata"))
    if u is not None:
        out["usage"] = u
    if citations:
        out["citations"] = citations  # the field Perplexity-style clients read
    return out


class ChunkStream:
    """Turns Gemini reply events (one, for fake streaming, or many) into `chat.completion.chunk`s.

    Stateful only in what the OpenAI stream needs: the id, whether each choice has had its
    role chunk, tool-call indexes per choice, the last usage seen, and each choice's finish reason:
    the finish chunk goes out in `finish()`, once the upstream stream ended well (older models repeat
    finishReason on every event, and a stream that fails after its content must end with the error
    alone, never with a finish chunk first).
    """

    def __init__(self, *, model: str, created: int, include_usage: bool = False,
                 new_id: Callable[[], str] = random_id, image_output: str = "both"):
        self.model = model
        self.key_fp: str | None = None  # the key that answered, once known (seals thought signatures)
        self.image_output = image_output
        self.created = created
        self.include_usage = include_usage
        self.new_id = new_id
        self.id: str | None = None
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._tool_index: dict[int, int] = {}
        self._usage: dict[str, Any] | None = None
        self._sources: dict[int, list[tuple[str, str]]] = {}
        self._chars: dict[int, int] = {}
        self._reasons: dict[int, str] = {}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        if self.id is None:
            self.id = "chatcmpl-" + self.new_id()
        chunk: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                 "model": self.model, "choices": choices}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.id is None and event.get("responseId"):
            self.id = "chatcmpl-" + str(event["responseId"])
        if isinstance(event.get("usageMetadata"), dict):
            self._usage = usage(event["usageMetadata"])
        out: list[dict[str, Any]] = []
        for pos, cand in enumerate(event.get("candidates") or ()):
            if not isinstance(cand, dict):
                continue
            index = int(cand.get("index", pos) or 0)
            content = cand.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            texts, thoughts, calls, images = _split_parts(parts, self.new_id, self.image_output,
                                                          self._chars.get(index, 0) > 0, self.key_fp)
            if index not in self._started:
                self._started.add(index)
                out.append(self._chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]))
            delta: dict[str, Any] = {}
            if thoughts:
                delta["reasoning_content"] = "".join(thoughts)
            if texts:
                delta["content"] = "".join(texts)
            if images:
                delta["images"] = images
            if calls:
                first = self._tool_index.get(index, 0)
                for k, call in enumerate(calls):
                    call["index"] = first + k
                self._tool_index[index] = first + len(calls)
                delta["tool_calls"] = calls
            if delta:
                out.append(self._chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]))
            if texts:
                self._chars[index] = self._chars.get(index, 0) + len(delta.get("content", ""))
            found = grounding_sources(cand)
            if found:
                self._sources[index] = found
            if cand.get("finishReason"):
                self._reasons[index] = str(cand["finishReason"])
        return out

    def _close(self, index: int, reason: str) -> list[dict[str, Any]]:
        """The source list of a grounded answer (as a last content delta), then the finish chunk."""
        self._finished.add(index)
        out = []
        found = self._sources.pop(index, None)
        if found:
            text, _ = sources_text(found, self._chars.get(index, 0))
            chunk = self._chunk([{"index": index, "delta": {"content": text}, "logprobs": None,
                                  "finish_reason": None}])
            chunk["citations"] = [uri for _, uri in found]
            out.append(chunk)
        out.append(self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]))
        return out

    @property
    def finished(self) -> bool:
        return bool(self._started) and self._started <= self._finished

    def finish(self) -> list[dict[str, Any]]:
        """Closing chunks: a finish for any choice Gemini left open, then the usage chunk if asked for."""
        out = []
        for index in sorted(self._started - self._finished):
            out.extend(self._close(index, finish_reason(self._reasons.get(index), index in self._tool_index)))
        if self.include_usage:
            chunk = self._chunk([])
            chunk["usage"] = self._usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            out.append(chunk)
        return out
