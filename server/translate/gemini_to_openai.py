"""Gemini replies → OpenAI `chat.completion` and `chat.completion.chunk` objects. Pure.

Shapes follow the OpenAI spec's `CreateChatCompletionResponse` and
`CreateChatCompletionStreamResponse`. Thought parts go to `reasoning_content`
(what SillyTavern and DeepSeek-style clients read), never into `content`.
A function call gets a generated id (with its thought signature inside, see
openai_to_gemini.make_tool_call_id) and `finish_reason: "tool_calls"`.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import ujson

from .openai_to_gemini import make_tool_call_id

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
}


def random_id() -> str:
    return os.urandom(12).hex()


def finish_reason(gemini_reason: Any, has_tool_calls: bool) -> str | None:
    if not gemini_reason:
        return None
    if has_tool_calls:
        return "tool_calls"
    return FINISH_REASONS.get(str(gemini_reason), "stop")


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


def _split_parts(parts: Any, new_id: Callable[[], str]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """→ (text pieces, thought pieces, tool calls without index)."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for p in parts or ():
        if not isinstance(p, dict):
            continue
        if "functionCall" in p and isinstance(p["functionCall"], dict):
            fc = p["functionCall"]
            calls.append({
                "id": make_tool_call_id(new_id(), p.get("thoughtSignature")),
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
    return texts, thoughts, calls


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
               new_id: Callable[[], str] = random_id) -> dict[str, Any]:
    """A whole Gemini reply → `chat.completion`."""
    choices = []
    citations: list[str] = []
    for pos, cand in enumerate(reply.get("candidates") or ()):
        if not isinstance(cand, dict):
            continue
        content = cand.get("content") if isinstance(cand.get("content"), dict) else {}
        texts, thoughts, calls = _split_parts(content.get("parts"), new_id)
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(texts) if (texts or not calls) else None,
                                   "refusal": None}
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if calls:
            message["tool_calls"] = calls
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
    role chunk, tool-call indexes per choice, the last usage seen.
    """

    def __init__(self, *, model: str, created: int, include_usage: bool = False,
                 new_id: Callable[[], str] = random_id):
        self.model = model
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
            if index in self._finished:
                continue
            content = cand.get("content") if isinstance(cand.get("content"), dict) else {}
            texts, thoughts, calls = _split_parts(content.get("parts"), self.new_id)
            if index not in self._started:
                self._started.add(index)
                out.append(self._chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]))
            delta: dict[str, Any] = {}
            if thoughts:
                delta["reasoning_content"] = "".join(thoughts)
            if texts:
                delta["content"] = "".join(texts)
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
                out.extend(self._close(index, finish_reason(cand["finishReason"], index in self._tool_index)))
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
            out.extend(self._close(index, "tool_calls" if index in self._tool_index else "stop"))
        if self.include_usage:
            chunk = self._chunk([])
            chunk["usage"] = self._usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            out.append(chunk)
        return out
