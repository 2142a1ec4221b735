"""Gemini replies → OpenAI Responses objects: the `Response` and its stream events. Pure.

One machine does both: `ResponseStream` turns Gemini's parts, in order, into output items and the events that
build them (spec `ResponseStreamEvent`; order as OpenAI sends it, see the reference's §3), and `response()` is
that machine fed one whole reply, so a fake stream and a plain answer end with the same `Response`.

Items, from Gemini's parts:
- thought parts → a `reasoning` item, their text as one `summary_text` part;
- text (and code the model ran, with its result, as the Chat translator renders them) → a `message` item with
  one `output_text` part; grounding sources are appended to it as a source list with `url_citation`
  annotations, exactly as the Chat side computes them;
- each `functionCall` → a `function_call` item whose `call_id` carries Gemini's call id and the sealed thought
  signature (the Chat scheme, openai_to_gemini.make_tool_call_id), and `namespace` when the request declared
  the function inside a namespace tool;
- an image the model drew → an `image_generation_call` item with the base64 image as `result` (the spec's item
  for model-made images; a Markdown data URL would put megabytes into a terminal client's text). Its signature
  is kept by the service (server/signatures.ImageSignatures), which knows the image when it comes back.
- other thought signatures (Gemini 3 signs text parts too) go into a reasoning item's `encrypted_content`, when
  the request's `include` asks for `reasoning.encrypted_content`: the reasoning item just before, when one is
  still open (the signature came on a thought or on the first answer part after the thoughts), else a reasoning
  item of its own right after the message that holds the signed part (Gemini signs the last part of an answer,
  which a stream cannot go back to). responses_to_gemini puts it back onto the part next to it.

The final Response has status `completed`, or `incomplete` when Gemini stopped at MAX_TOKENS
(`max_output_tokens`) or filtered the output (`content_filter`). `output_text` is an SDK convenience, not on
the wire, and is not sent. `completed_at` is left null: it is a clock reading, which a pure translator does not
take (the caller may fill it in).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..signatures import seal
from .gemini_facts import candidate_parts, image_of
from .gemini_to_openai import _split_parts, finish_reason, grounding_sources, random_id, sources_text, token_counts
from .responses_to_gemini import function_namespaces

ENCRYPTED = "reasoning.encrypted_content"
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def usage(meta: Any) -> dict[str, Any]:
    """Gemini usageMetadata → ResponseUsage (zeros when Gemini sent none; output includes thoughts)."""
    prompt, output, thoughts = token_counts(meta)
    cached = int(meta.get("cachedContentTokenCount") or 0) if isinstance(meta, dict) else 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": thoughts},
            "total_tokens": prompt + output}


def _echo(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request's settings a Response repeats (spec `Response`), with the spec's defaults."""
    r, t = request.get("reasoning"), request.get("text")
    reasoning: Mapping[str, Any] = r if isinstance(r, dict) else {}
    text: Mapping[str, Any] = t if isinstance(t, dict) else {}

    def get(name: str, default: Any) -> Any:
        value = request.get(name)
        return default if value is None else value

    return {
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "parallel_tool_calls": get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default",
        "store": get("store", True),
        "temperature": get("temperature", 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"},
        "tool_choice": get("tool_choice", "auto"),
        "tools": get("tools", []),
        "top_logprobs": get("top_logprobs", 0),
        "top_p": get("top_p", 1.0),
        "truncation": get("truncation", "disabled"),
        "metadata": get("metadata", {}),
        **({"user": request["user"]} if isinstance(request.get("user"), str) else {}),  # a string, or absent
    }


class ResponseStream:
    """Gemini reply events (many, or one whole reply for fake streaming) → Responses stream events.

    Items are opened as Gemini's parts come and closed when a different kind of part follows; at most one item
    (a reasoning or a message item) is open at a time, so `output_index` is the count of finished items. The
    terminal event comes only from `finish()` (older models repeat finishReason on every event) or `fail()`,
    so a stream that fails never sent `response.completed` first."""

    def __init__(self, *, request: Mapping[str, Any], response_id: str, model: str, created: int,
                 new_id: Callable[[], str] = random_id):
        self.request = request
        self.response_id = response_id
        self.model = model
        self.created = created
        self.new_id = new_id
        self.key_fp: str | None = None  # the key that answered, once known (seals thought signatures)
        self.output: list[dict[str, Any]] = []
        include = request.get("include")
        self._encrypted = isinstance(include, list) and ENCRYPTED in include
        self._namespaces = function_namespaces(request)
        self._echo = _echo(request)
        self._seq = 0
        self._started = False
        self._open: dict[str, Any] | None = None  # the open reasoning or message item
        self._text = ""                            # its text so far
        self._pending: str | None = None           # a sealed signature waiting for the open message to close
        self._annotations: list[dict[str, Any]] = []
        self._sources: list[tuple[str, str]] = []
        self._reason: str | None = None
        self._usage: Any = None

    # -- events --------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _response(self, status: str, error: dict[str, Any] | None = None,
                  incomplete: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.response_id, "object": "response", "created_at": self.created, "status": status,
            "background": False, "completed_at": None, "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model, "output": [dict(item) for item in self.output],
            **self._echo,
        }
        if status in ("completed", "incomplete"):
            out["usage"] = usage(self._usage)
        return out

    def start(self) -> list[dict[str, Any]]:
        """`response.created` and `response.in_progress` (once)."""
        if self._started:
            return []
        self._started = True
        return [self._event("response.created", response=self._response("in_progress")),
                self._event("response.in_progress", response=self._response("in_progress"))]

    def _index(self) -> int:
        return len(self.output)

    def _add(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._event("response.output_item.added", output_index=self._index(), item=dict(item))]

    def _done(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        event = self._event("response.output_item.done", output_index=self._index(), item=item)
        self.output.append(item)
        return [event]

    # -- items ---------------------------------------------------------------------------------

    def _open_reasoning(self) -> list[dict[str, Any]]:
        if self._open is not None and self._open["type"] == "reasoning":
            return []
        out = self._close()
        self._open = {"id": "rs_" + self.new_id(), "type": "reasoning", "summary": []}
        if self._encrypted:
            self._open["encrypted_content"] = None
        self._text = ""
        return out + self._add(self._open)

    def _open_message(self) -> list[dict[str, Any]]:
        if self._open is not None and self._open["type"] == "message":
            return []
        out = self._close()
        self._open = {"id": "msg_" + self.new_id(), "type": "message", "status": "in_progress", "content": [],
                      "role": "assistant"}
        self._text = ""
        self._annotations = []
        out += self._add(self._open)
        out.append(self._event("response.content_part.added", item_id=self._open["id"], output_index=self._index(),
                               content_index=0, part=_text_part("")))
        return out

    def _summary_delta(self, text: str) -> list[dict[str, Any]]:
        out = self._open_reasoning()
        item = self._open
        assert item is not None
        where = {"item_id": item["id"], "output_index": self._index(), "summary_index": 0}
        if not self._text:
            out.append(self._event("response.reasoning_summary_part.added", **where,
                                   part={"type": "summary_text", "text": ""}))
        self._text += text
        out.append(self._event("response.reasoning_summary_text.delta", **where, delta=text))
        return out

    def _text_delta(self, text: str) -> list[dict[str, Any]]:
        out = self._open_message()
        item = self._open
        assert item is not None
        self._text += text
        out.append(self._event("response.output_text.delta", item_id=item["id"], output_index=self._index(),
                               content_index=0, delta=text, logprobs=[]))
        return out

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        """The .done events of the open item; then a reasoning item for a signature that waited for it."""
        item, self._open = self._open, None
        out: list[dict[str, Any]] = []
        if item is not None and item["type"] == "reasoning":
            where = {"item_id": item["id"], "output_index": self._index(), "summary_index": 0}
            if self._text:
                part = {"type": "summary_text", "text": self._text}
                out.append(self._event("response.reasoning_summary_text.done", **where, text=self._text))
                out.append(self._event("response.reasoning_summary_part.done", **where, part=part))
                item["summary"] = [part]
            out += self._done(item)
        elif item is not None:
            where = {"item_id": item["id"], "output_index": self._index(), "content_index": 0}
            part = _text_part(self._text, self._annotations)
            out.append(self._event("response.output_text.done", **where, text=self._text, logprobs=[]))
            out.append(self._event("response.content_part.done", **where, part=part))
            item.update(status=status, content=[part])
            out += self._done(item)
        if self._pending is not None:
            signature, self._pending = self._pending, None
            blob = {"id": "rs_" + self.new_id(), "type": "reasoning", "summary": [], "encrypted_content": signature}
            out += self._add(blob) + self._done(blob)
        return out

    def _signature(self, signature: str) -> list[dict[str, Any]]:
        """A signature on a part other than a function call (see the module docstring)."""
        sealed = seal(signature, self.key_fp)
        item = self._open
        if item is not None and item["type"] == "reasoning" and not item.get("encrypted_content"):
            item["encrypted_content"] = sealed
            return []
        out = self._close() if self._pending is not None else []  # an earlier one still waits: out it goes
        self._pending = sealed
        return out

    def _function_call(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = self._close()
        call = _split_parts([part], self.new_id, key_fp=self.key_fp)[2][0]
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        item: dict[str, Any] = {"id": "fc_" + self.new_id(), "type": "function_call", "status": "in_progress",
                                "arguments": "", "call_id": call["id"], "name": name}
        if name in self._namespaces:
            item["namespace"] = self._namespaces[name]
        out += self._add(item)
        where = {"item_id": item["id"], "output_index": self._index()}
        out.append(self._event("response.function_call_arguments.delta", **where, delta=arguments))
        out.append(self._event("response.function_call_arguments.done", **where, name=name, arguments=arguments))
        return out + self._done({**item, "status": "completed", "arguments": arguments})

    def _image(self, data: str) -> list[dict[str, Any]]:
        out = self._close()
        item = {"id": "ig_" + self.new_id(), "type": "image_generation_call", "status": "in_progress",
                "result": None}
        return out + self._add(item) + self._done({**item, "status": "completed", "result": data})

    def _part(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        picture = image_of(part)
        if picture is not None:
            return self._image(picture[1])
        if isinstance(part.get("functionCall"), dict):
            return self._function_call(part)
        out: list[dict[str, Any]] = []
        texts, thoughts, _, _ = _split_parts([part], self.new_id)
        if "".join(thoughts):  # first, so that a signed thought signs its own reasoning item
            out += self._summary_delta("".join(thoughts))
        signature = part.get("thoughtSignature")
        if isinstance(signature, str) and signature and self._encrypted:
            out += self._signature(signature)
        if "".join(texts):
            out += self._text_delta("".join(texts))
        if self._pending is not None and (self._open is None or self._open["type"] == "reasoning"):
            out += self._close()  # no message to wait for: the signature's reasoning item goes out now
        return out

    # -- the interface -------------------------------------------------------------------------

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One Gemini stream event (or a whole reply) → the events it makes; only the first candidate counts
        (Responses has one output)."""
        out = self.start()
        if isinstance(event.get("usageMetadata"), dict):
            self._usage = event["usageMetadata"]
        candidates = event.get("candidates")
        cand = next((c for c in candidates if isinstance(c, dict) and c.get("index") in (0, None)), None) \
            if isinstance(candidates, list) else None
        if cand is None:
            return out
        for part in candidate_parts(cand):
            out += self._part(part)
        found = grounding_sources(cand)
        if found:
            self._sources = found
        if cand.get("finishReason"):
            self._reason = str(cand["finishReason"])
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The .done events of what is open, then `response.completed`, or `response.incomplete` when Gemini
        stopped at MAX_TOKENS or filtered the output. An abnormal finish reason (gemini_facts) raises ValueError,
        as in the Chat translator: the dispatcher turns those into failures (`fail()`) before this."""
        out = self.start()
        incomplete = _INCOMPLETE.get(finish_reason(self._reason or "STOP", False))
        if self._sources:
            out += self._open_message()
            item = self._open
            assert item is not None
            text, notes = sources_text(self._sources, len(self._text))
            out += self._text_delta(text)
            for note in notes:
                annotation = {"type": "url_citation", **note["url_citation"]}
                out.append(self._event("response.output_text.annotation.added", item_id=item["id"],
                                       output_index=self._index(), content_index=0,
                                       annotation_index=len(self._annotations), annotation=annotation))
                self._annotations.append(annotation)
            self._sources = []
        out += self._close("incomplete" if incomplete else "completed")
        status = "incomplete" if incomplete else "completed"
        out.append(self._event(f"response.{status}", response=self._response(status, incomplete=incomplete)))
        return out

    def fail(self, code: str, message: str) -> list[dict[str, Any]]:
        """An `error` event (which openai-python raises at once) and `response.failed` (which Codex reads) with
        the finished items; `code` should be one of the spec's ResponseErrorCode values (e.g. server_error)."""
        out = self.start()
        error = {"code": code, "message": message}
        out.append(self._event("error", code=code, message=message, param=None,
                               error={"type": code, "code": code, "message": message, "param": None}))
        out.append(self._event("response.failed", response=self._response("failed", error=error)))
        return out


def _text_part(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "annotations": list(annotations or ()), "logprobs": [], "text": text}


def response(reply: Mapping[str, Any], *, request: Mapping[str, Any], response_id: str, model: str, created: int,
             key_fp: str | None = None, new_id: Callable[[], str] = random_id) -> dict[str, Any]:
    """A whole Gemini reply → the `Response` (the stream machine fed the reply at once, so both agree)."""
    stream = ResponseStream(request=request, response_id=response_id, model=model, created=created, new_id=new_id)
    stream.key_fp = key_fp
    stream.feed(reply)
    final: dict[str, Any] = stream.finish()[-1]["response"]
    return final
