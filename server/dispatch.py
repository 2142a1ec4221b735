"""One request's attempts: pick a key, call Gemini, read the failure, try again or give up.

Everything about retrying lives here and in pool/policy.py; handlers see either an
answer or one DispatchError. For streams, retrying is possible only until the first
event has been handed on: after that a failure ends the stream.
"""
from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from .pool.keys import Key, KeyPool
from .pool.policy import DispatchError, KeyEffect, verdict
from .settings import Settings
from .upstream.failures import BadResponse, EmptyReply, PromptBlocked, UpstreamFailure, classify_reply
from .upstream.gemini import GeminiClient

log = logging.getLogger("keyloom.dispatch")
T = TypeVar("T")


class Attempts:
    """Book-keeping for the attempts of one request."""

    def __init__(self, pool: KeyPool, model: str, max_attempts: int, max_empty: int):
        self.pool = pool
        self.model = model
        self.max_attempts = max_attempts
        self.max_empty = max_empty
        self.failures: list[UpstreamFailure] = []
        self.tried: set[str] = set()
        self.avoid: set[str] = set()
        self.empty = 0
        self.count = 0
        self.key: Key | None = None

    def next_key(self) -> Key | None:
        if self.count >= self.max_attempts:
            return None
        key = self.pool.pick(self.model, self.avoid, self.tried)
        if key is not None:
            self.count += 1
            self.tried.add(key.fp)
            self.key = key
        return key

    def succeeded(self, key: Key) -> None:
        self.pool.record_success(key, self.model)

    def failed(self, key: Key, failure: UpstreamFailure, *, final: bool = False) -> None:
        """Record a failure; raise DispatchError when it ends the request."""
        v = verdict(failure)
        self.failures.append(failure)
        disable = v.key is KeyEffect.DISABLE
        if disable and key.usable:
            log.warning("key %s taken out of rotation: %s: %s", key, failure.kind, " ".join(failure.message.split()))
        else:
            log.info("key %s, model %s, attempt %d: %s: %s", key, self.model or "-", self.count, failure.kind,
                     " ".join(failure.message.split()))
        self.pool.record_failure(key, self.model, failure.message, disable=disable)
        if v.key is not KeyEffect.NONE:
            self.avoid.add(key.fp)
        if v.empty:
            self.empty += 1
        if final or not v.retry or (v.empty and self.empty > self.max_empty):
            raise DispatchError(self.failures, model=self.model)

    def exhausted(self) -> DispatchError:
        if self.failures:
            return DispatchError(self.failures, model=self.model)
        counts = self.pool.counts()
        if counts["total"] == 0:
            why = "no key is configured (set GEMINI_API_KEYS)"
        else:
            why = f"all {counts['total']} configured keys are disabled"
        return DispatchError([], unavailable=why, model=self.model)


def _event_has_output(event: dict[str, Any]) -> tuple[bool, bool]:
    """→ (has any part or finish reason, has a finish reason)."""
    anything = finished = False
    for c in event.get("candidates") or ():
        if not isinstance(c, dict):
            continue
        if c.get("finishReason"):
            anything = finished = True
        content = c.get("content")
        if isinstance(content, dict) and content.get("parts"):
            anything = True
    return anything, finished


class Dispatcher:
    def __init__(self, pool: KeyPool, gemini: GeminiClient, settings: Callable[[], Settings]):
        self.pool = pool
        self.gemini = gemini
        self.settings = settings

    def _attempts(self, model: str) -> Attempts:
        s = self.settings()
        return Attempts(self.pool, model, s.MAX_RETRY_NUM, s.MAX_EMPTY_RESPONSES)

    async def _each_key(self, attempts: Attempts, call: Callable[[Key], Awaitable[T]]) -> T:
        """Try `call` with one key after another until it answers or the attempts run out."""
        while (key := attempts.next_key()) is not None:
            try:
                result = await call(key)
            except UpstreamFailure as f:
                attempts.failed(key, f)
                continue
            attempts.succeeded(key)
            return result
        raise attempts.exhausted()

    async def generate(self, model: str, body: bytes) -> dict[str, Any]:
        async def once(key: Key) -> dict[str, Any]:
            reply = await self.gemini.generate(key.secret, model, body)
            failure = classify_reply(reply)
            if failure is not None:
                raise failure
            return reply

        return await self._each_key(self._attempts(model), once)

    async def stream(self, model: str, body: bytes) -> AsyncIterator[dict[str, Any]]:
        attempts = self._attempts(model)
        while (key := attempts.next_key()) is not None:
            started = finished = False
            events = self.gemini.stream(key.secret, model, body)
            try:
                async for event in events:
                    if not started:
                        feedback = event.get("promptFeedback")
                        if isinstance(feedback, dict) and feedback.get("blockReason") and not event.get("candidates"):
                            failure = classify_reply(event)
                            raise failure if failure is not None else PromptBlocked("prompt blocked", 200)
                    anything, done = _event_has_output(event)
                    finished = finished or done
                    if not anything:
                        continue
                    started = True
                    yield event
                if not started:
                    raise EmptyReply("Gemini's stream ended without any output", 200)
                if not finished:
                    raise BadResponse("Gemini's stream ended before the reply was complete", 200)
            except UpstreamFailure as f:
                attempts.failed(key, f, final=started)
                continue
            finally:
                await events.aclose()
            attempts.succeeded(key)
            return
        raise attempts.exhausted()

    async def list_models(self) -> list[dict[str, Any]]:
        attempts = Attempts(self.pool, "", max(3, min(len(self.pool.keys), 10)), 0)
        return await self._each_key(attempts, lambda key: self.gemini.list_models(key.secret))
