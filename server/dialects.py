"""The API dialects Keyloom speaks to clients, and the little that differs between them on the way in and out.

Three dialects reach the same pool: OpenAI Chat Completions (SillyTavern and most chat apps), the OpenAI
Responses API (Codex CLI, the Agents SDK) and the Anthropic Messages API (Claude Code). Everything that makes
Keyloom worth using — rotation, counting, cool-downs, empty-reply retries, fake streaming, keep-alives,
cancellation, the request log — happens once, in the generation service and the streaming handler, on Gemini
requests and Gemini replies. A dialect only says how its request becomes a Gemini request (`Dialect`, pure
translators) and how Gemini's reply becomes its answer (a `Shaper` per stream, the translators' output side).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .translate import anthropic_to_gemini, openai_to_gemini, responses_to_gemini
from .translate.gemini_body import Extras
from .translate.sse import json_bytes
from .translate.traits import ModelTraits

Translate = Callable[[Mapping[str, Any], ModelTraits, Mapping[str, tuple[str, str]], Extras], dict[str, Any]]


@dataclass(frozen=True)
class Dialect:
    name: str                   # for logs and errors
    translate: Translate        # the client's request → a Gemini GenerateContentRequest (raises TranslationError)
    image_urls: Callable[[Mapping[str, Any]], list[str]]  # remote images the request names, fetched before translation
    turns: str                  # the field holding the conversation, counted against MAX_MESSAGES


CHAT = Dialect("chat", openai_to_gemini.build_request, openai_to_gemini.remote_image_urls, "messages")
RESPONSES = Dialect("responses", responses_to_gemini.build_request, responses_to_gemini.remote_image_urls, "input")
MESSAGES = Dialect("messages", anthropic_to_gemini.build_request, anthropic_to_gemini.remote_image_urls, "messages")


class Shaper(Protocol):
    """Gemini's reply events → one dialect's stream bytes. `key_fp` is set before each `feed` (the key that
    answered seals the thought signatures handed out); `model` changes when a fallback serves the request;
    `finish` only after the upstream stream ended well."""

    key_fp: str | None
    model: str

    def feed(self, event: Mapping[str, Any]) -> bytes: ...

    def finish(self) -> bytes: ...


class EventSource(Protocol):
    """A dialect's stream translator (gemini_to_responses.ResponseStream, gemini_to_anthropic.MessageStream)."""

    key_fp: str | None
    model: str

    def start(self) -> list[dict[str, Any]]: ...

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...


class NamedEventShaper:
    """A stream translator's events as named SSE events. The opening events (`response.created`,
    `message_start`) go out with the first output, not before: until then a quick failure can still get its
    own HTTP status, and keep-alives fill the wait."""

    def __init__(self, stream: EventSource):
        self.stream = stream
        self.started = False

    @property
    def key_fp(self) -> str | None:
        return self.stream.key_fp

    @key_fp.setter
    def key_fp(self, fp: str | None) -> None:
        self.stream.key_fp = fp

    @property
    def model(self) -> str:
        return self.stream.model

    @model.setter
    def model(self, model: str) -> None:
        self.stream.model = model

    def begin(self) -> list[dict[str, Any]]:
        if self.started:
            return []
        self.started = True
        return self.stream.start()

    def feed(self, event: Mapping[str, Any]) -> bytes:
        events = self.begin() + self.stream.feed(event)
        return named_events(events) if events else b""

    def finish(self) -> bytes:
        return named_events(self.begin() + self.stream.finish())


def named_events(events: list[dict[str, Any]]) -> bytes:
    """SSE with an `event:` line naming each event's type: how the Responses and Messages APIs frame theirs
    (clients dispatch on the name; the data repeats it in `type`)."""
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + json_bytes(e) + b"\n\n" for e in events)


# Anthropic's keep-alive is an event of its own (its SDKs skip `ping`, before message_start too); the OpenAI
# dialects take an SSE comment, which every SSE parser skips.
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
