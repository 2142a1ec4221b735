"""One request's attempts: pick keys, call Gemini, read the failure, try again or give up.

Attempts go in rounds. A round asks `width` different keys at once (CONCURRENT_REQUESTS);
the first good answer wins and the others are cancelled; after a round in which every
key failed, the width grows by INCREASE_CONCURRENT_ON_FAILURE up to
MAX_CONCURRENT_REQUESTS. Every request that reached Google is counted against its key.
When every key is only resting briefly after upstream errors, the request waits for
the first one rather than failing. For streams, retrying is possible only until the
first event has been handed on: after that a failure ends the stream.

Everything about retrying lives here and in pool/policy.py; callers see either an
answer or one DispatchError.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .pool.keys import Key, KeyPool, Unavailable
from .pool.policy import DispatchError, KeyEffect, verdict
from .settings import Settings
from .signatures import with_placeholder_signatures
from .translate.gemini_facts import abnormal_message, candidate_parts, finish_kind, is_answer_part
from .translate.gemini_to_openai import token_counts
from .upstream.failures import (
    AbnormalFinish,
    BadResponse,
    EmptyReply,
    PromptBlocked,
    QuotaExceeded,
    SignatureRefused,
    Unreachable,
    UpstreamFailure,
    classify_reply,
)

log = logging.getLogger("keyloom.dispatch")
T = TypeVar("T")

MAX_WAIT = 5.0   # longest wait for a key resting after upstream errors, per wait
MAX_WAITS = 3    # waits per request
MAX_PACED_WAIT = 60.0  # seconds a request may wait in all for keys pacing (KEY_MIN_INTERVAL_MS)


@dataclass
class Trace:
    """What happened to one client request, for the request log."""

    model: str = ""
    asked: str = ""  # the model id the client asked for, when an alias (MODEL_ALIASES) served another
    client: Any = None  # the client key (server/client_keys.py) the request came with; None: the owner
    key_fp: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def tokens(reply: dict[str, Any] | None) -> tuple[int, int]:
    prompt, completion, _ = token_counts(reply.get("usageMetadata") if isinstance(reply, dict) else None)
    return prompt, completion


class Observer(Protocol):
    """Who watches attempts from outside (server/ops.py: GET /metrics and the alert webhook)."""

    def attempt(self, key: Key, model: str, result: str) -> None:
        """An upstream call ended: `result` is "ok" or the failure's kind."""

    def unavailable(self, provider: str, model: str, u: Unavailable) -> None:
        """A request found no key left to try, for the reason `u`."""


class Attempts:
    """Book-keeping for the attempts of one request, and what they do to the keys."""

    observer: Observer | None = None  # set by the Dispatcher

    def __init__(self, pool: KeyPool, model: str, max_attempts: int, max_empty: int, trace: Trace | None = None,
                 provider: str = "gemini", deadline: float = 0.0, upstream: str = "Gemini",
                 prefer: str | None = None):
        """`deadline`: REQUEST_DEADLINE in seconds (0: none); the request ends with a 504 when it passes.
        `prefer`: the fingerprint of the key to try first (the issuer of the request's thought signatures)."""
        self.pool = pool
        self.prefer = prefer
        self.upstream = upstream
        self.seconds = deadline
        self.deadline = asyncio.get_running_loop().time() + deadline if deadline else 0.0
        self.provider = provider
        self.model = model
        self.max_attempts = max_attempts
        self.max_empty = max_empty
        self.trace = trace or Trace()
        self.trace.model = model
        self.failures: list[UpstreamFailure] = []
        self.avoid: set[str] = set()
        self.empty = 0
        self.count = 0
        self.waits = 0
        self.paced = 0.0  # seconds waited for pacing keys

    def next_keys(self, width: int) -> list[Key]:
        keys: list[Key] = []
        while len(keys) < width and self.count < self.max_attempts:
            prefer = self.prefer if self.count == 0 else None  # only the first attempt: it may be the right key
            key = self.pool.pick(self.model, self.avoid | {k.fp for k in keys}, self.provider, prefer)
            if key is None:
                break
            keys.append(key)
            self.count += 1
        self.trace.attempts = self.count
        if keys:
            self.trace.key_fp = keys[0].fp
        return keys

    def succeeded(self, key: Key, reply: dict[str, Any] | None) -> None:
        prompt, completion = tokens(reply)
        self.pool.success(key, self.model, prompt, completion)
        if self.observer is not None:
            self.observer.attempt(key, self.model, "ok")
        self.trace.key_fp = key.fp
        self.trace.prompt_tokens, self.trace.completion_tokens = prompt, completion

    def failed(self, key: Key, failure: UpstreamFailure, *, final: bool = False) -> None:
        """Record a failure and apply its effect on the key; raise DispatchError when it ends the request."""
        v = verdict(failure)
        self.failures.append(failure)
        self.trace.key_fp = key.fp
        pool, model = self.pool, self.model
        message = " ".join(failure.message.split())
        if v.key is KeyEffect.DISABLE and key.usable:
            log.warning("key %s taken out of rotation: %s: %s", key, failure.kind, message)
        else:
            log.info("key %s, model %s: %s: %s", key, model or "-", failure.kind, message)
        pool.failure(key, model, failure.kind, failure.message)
        pool.learn(key, model, failure)  # the project and the limits Google named (pool/learned.py)
        if self.observer is not None:
            self.observer.attempt(key, model, failure.kind)
        if isinstance(failure, Unreachable) and not failure.reached:
            pool.release(key, model)
        effect = v.key
        if effect is KeyEffect.DISABLE:
            pool.disable(key, f"{failure.kind}: {failure.message}")
        elif effect is KeyEffect.COOL:
            pool.cool_down(key, model, failure.retry_after if isinstance(failure, QuotaExceeded) else None,
                           failure.message)
        elif effect is KeyEffect.EXHAUST:
            pool.exhaust(key, model, failure.message)
        elif effect is KeyEffect.BACK_OFF:
            pool.back_off(key)
        if effect is KeyEffect.REST:
            self.avoid.add(key.fp)  # the other effects keep the key out through its state
        if v.empty:
            self.empty += 1
        if final or not v.retry or (v.empty and self.empty > self.max_empty) or \
                (v.limit and sum(type(f) is type(failure) for f in self.failures) >= v.limit):
            raise DispatchError(self.failures, model=model, upstream=self.upstream)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return max(0.0, self.deadline - asyncio.get_running_loop().time()) if self.deadline else None

    def timed_out(self) -> DispatchError:
        return DispatchError(self.failures, model=self.model, deadline=self.seconds, attempts=self.count,
                             upstream=self.upstream)

    def exhausted(self) -> DispatchError:
        u = self.pool.unavailable(self.model, self.avoid, self.provider)
        if self.observer is not None:
            self.observer.unavailable(self.provider, self.model, u)
        return DispatchError(self.failures, unavailable=u, model=self.model, upstream=self.upstream)


def _event_output(event: dict[str, Any]) -> tuple[bool, bool, str]:
    """→ (has any part, has an answer part, its finish reason or "")."""
    parts = answer = False
    finish = ""
    for c in event.get("candidates") or ():
        if not isinstance(c, dict):
            continue
        finish = str(c.get("finishReason") or "") or finish
        for p in candidate_parts(c):
            parts = True
            answer = answer or is_answer_part(p)
    return parts, answer, finish


class _Body:
    """The body a request's attempts send: as translated, or, once Gemini has refused a thought signature in
    it, with Google's placeholder in place of every signature (rewritten once, on that rare path only)."""

    __slots__ = ("original", "attempts", "_placeholder")

    def __init__(self, original: bytes, attempts: Attempts | None = None):
        self.original = original
        self.attempts = attempts
        self._placeholder: bytes | None = None

    def now(self) -> bytes:
        a = self.attempts
        if a is None or not any(isinstance(f, SignatureRefused) for f in a.failures):
            return self.original
        if self._placeholder is None:
            self._placeholder = with_placeholder_signatures(self.original)
        return self._placeholder


class Dispatcher:
    def __init__(self, pool: KeyPool, gemini: Any, settings: Callable[[], Settings], provider: str = "gemini"):
        """`gemini`: the upstream client (GeminiClient, or VertexClient, which has the same methods)."""
        self.pool = pool
        self.provider = provider
        self.gemini = gemini
        self.settings = settings
        self._list_offset = 0
        self._spares: set[asyncio.Future[Any]] = set()
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep  # waits for a key (tests: a manual clock's)
        self.observer: Observer | None = None  # the app's (server/ops.py)

    def _attempts(self, model: str, trace: Trace | None, prefer: str | None = None) -> Attempts:
        s = self.settings()
        a = Attempts(self.pool, model, s.MAX_RETRY_NUM, s.MAX_EMPTY_RESPONSES, trace, self.provider,
                     s.REQUEST_DEADLINE, getattr(self.gemini, "name", self.provider), prefer)
        a.observer = self.observer
        return a

    async def _keys(self, attempts: Attempts, width: int) -> list[Key]:
        """Keys for the next round; waits briefly when every key is only resting; raises when none is left."""
        while True:
            keys = attempts.next_keys(width)
            if keys:
                return keys
            if attempts.count < attempts.max_attempts:
                u = self.pool.unavailable(attempts.model, attempts.avoid, self.provider)
                # keys pacing (KEY_MIN_INTERVAL_MS) are waited for as long as MAX_PACED_WAIT allows: spreading a
                # burst is their purpose; keys resting after errors a few times briefly
                if not u.quota and 0 < u.retry_after and (
                        attempts.paced + u.retry_after <= MAX_PACED_WAIT if u.pacing else
                        u.retry_after <= MAX_WAIT and attempts.waits < MAX_WAITS):
                    left = attempts.remaining()
                    if left is not None and left <= u.retry_after:
                        raise attempts.timed_out()
                    if u.pacing:
                        attempts.paced += u.retry_after
                    else:
                        attempts.waits += 1
                    await self.sleep(u.retry_after)
                    continue
            raise attempts.exhausted()

    async def _round(self, attempts: Attempts, keys: list[Key], call: Callable[[Key], Awaitable[T]],
                     spare: Callable[[T], None] | None = None) -> tuple[Key, T] | None:
        """Call with every key at once; the first success wins. The others are cancelled, or, with `spare`,
        left to finish in the background and their answers handed to `spare` (they are paid for anyway).
        None when all failed (and may be retried). Raises DispatchError when the request's deadline passes."""
        left = attempts.remaining()
        if len(keys) == 1:
            key = keys[0]
            scope = asyncio.timeout(left)
            try:
                async with scope:
                    return key, await call(key)
            except UpstreamFailure as f:
                attempts.failed(key, f)
                return None
            except TimeoutError:
                if scope.expired():
                    raise attempts.timed_out() from None
                raise
        tasks = {asyncio.ensure_future(call(k)): k for k in keys}
        pending = set(tasks)
        won = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=attempts.remaining(),
                                                   return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise attempts.timed_out()
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        won = tasks[task], task.result()
                        return won
                    if not isinstance(exc, UpstreamFailure):
                        raise exc
                    attempts.failed(tasks[task], exc)
            return None
        finally:
            losers = [t for t in tasks if not t.done()]
            if won is not None and spare is not None:
                for t in losers:
                    self._spares.add(t)
                    t.add_done_callback(functools.partial(self._settle_spare, key=tasks[t], attempts=attempts,
                                                          spare=spare))
            else:
                for t in losers:
                    t.cancel()  # closes its upstream connection; the request still counts against its key
                if losers:
                    await asyncio.gather(*losers, return_exceptions=True)

    def _settle_spare(self, task: asyncio.Future[Any], key: Key, attempts: Attempts,
                      spare: Callable[[Any], None]) -> None:
        """A losing call of a round finished after the request was answered: book it like any attempt."""
        self._spares.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            reply = task.result()
            prompt, completion = tokens(reply)
            self.pool.success(key, attempts.model, prompt, completion)
            if attempts.observer is not None:
                attempts.observer.attempt(key, attempts.model, "ok")
            spare(reply)
        elif isinstance(exc, UpstreamFailure):
            try:
                attempts.failed(key, exc)
            except DispatchError:
                pass

    async def close(self) -> None:
        for t in list(self._spares):
            t.cancel()
        if self._spares:
            await asyncio.gather(*self._spares, return_exceptions=True)

    def _widths(self) -> tuple[int, int, int]:
        s = self.settings()
        return s.CONCURRENT_REQUESTS, s.INCREASE_CONCURRENT_ON_FAILURE, max(s.MAX_CONCURRENT_REQUESTS,
                                                                           s.CONCURRENT_REQUESTS)

    async def generate(self, model: str, body: bytes, trace: Trace | None = None,
                       spare: Callable[[dict[str, Any]], None] | None = None, prefer: str | None = None
                       ) -> dict[str, Any]:
        """One answer from generateContent; with `spare`, concurrent rounds' other answers go there.
        `prefer`: the key to try first (see Attempts)."""
        sent = _Body(body)

        async def once(key: Key) -> dict[str, Any]:
            reply = await self.gemini.generate(key.secret, model, sent.now())
            failure = classify_reply(reply)
            if failure is not None:
                raise failure
            return reply

        return await self.call(model, once, trace, spare, prefer=prefer, sent=sent)

    async def call(self, model: str, once: Callable[[Key], Awaitable[T]], trace: Trace | None = None,
                   spare: Callable[[T], None] | None = None, succeeded: Callable[[T], Any] = lambda r: r,
                   prefer: str | None = None, sent: _Body | None = None) -> T:
        """Rounds of `once(key)` until one succeeds; raises DispatchError when none is left. `sent`: the body
        the attempts send, which a refused thought signature changes for the attempts after it."""
        attempts = self._attempts(model, trace, prefer)
        if sent is not None:
            sent.attempts = attempts
        width, grow, most = self._widths()
        while True:
            won = await self._round(attempts, await self._keys(attempts, width), once, spare)
            if won is not None:
                key, result = won
                attempts.succeeded(key, succeeded(result))
                return result
            width = min(width + grow, most)

    async def _open_stream(self, key: Key, model: str, body: bytes
                           ) -> tuple[AsyncGenerator[dict[str, Any], None], dict[str, Any], tuple[bool, str]]:
        """Start a stream and read it up to its first event with output:
        → (stream, that event, (an answer part seen, its finish reason)). An event that ends the reply at once
        is judged whole, so a reply that went wrong is still retried before anything reached the client."""
        events = self.gemini.stream(key.secret, model, body)
        try:
            async for event in events:
                feedback = event.get("promptFeedback")
                if isinstance(feedback, dict) and feedback.get("blockReason") and not event.get("candidates"):
                    raise classify_reply(event) or PromptBlocked("prompt blocked", 200)
                parts, answer, finish = _event_output(event)
                if finish:
                    failure = classify_reply(event)  # empty, filtered, cut by the token limit, or went wrong
                    if failure is not None:
                        raise failure
                if parts:
                    return events, event, (answer, finish)
            raise EmptyReply("Gemini's stream ended without any output", 200)
        except BaseException:
            await events.aclose()
            raise

    async def stream(self, model: str, body: bytes, trace: Trace | None = None, prefer: str | None = None
                     ) -> AsyncGenerator[dict[str, Any], None]:
        """Gemini's events as they come, each with its output (older models repeat finishReason on every
        event: the content of each is kept, and only the last finish reason counts). `prefer`: the key to try
        first (see Attempts)."""
        attempts = self._attempts(model, trace, prefer)
        sent = _Body(body, attempts)
        width, grow, most = self._widths()
        while True:
            won = await self._round(attempts, await self._keys(attempts, width),
                                    lambda k: self._open_stream(k, model, sent.now()))
            if won is not None:
                break
            width = min(width + grow, most)
        key, (events, event, (answered, finish)) = won
        last = event
        try:
            yield event
            async for event in events:
                parts, answer, done = _event_output(event)
                answered = answered or answer
                finish = done or finish
                if event.get("usageMetadata"):
                    last = event
                if parts or done:
                    yield event
            kind = finish_kind(finish)
            if kind == "abnormal":  # after some output: too late to try another key, never a finished answer
                raise AbnormalFinish(abnormal_message(finish), 200, reason=finish)
            if kind == "none":
                raise BadResponse("Gemini's stream ended before the reply was complete", 200)
            if not answered and kind != "filtered":  # thoughts only: never an empty success
                raise EmptyReply("Gemini's stream held only thoughts and no answer", 200)
        except UpstreamFailure as f:
            attempts.failed(key, f, final=True)
        finally:
            await events.aclose()
        attempts.succeeded(key, last)

    async def list_models(self) -> list[dict[str, Any]]:
        """Listing costs no quota: it is not counted, and it tries a few usable keys in turn."""
        return await self.free_call(lambda key: self.gemini.list_models(key.secret), "models")

    async def free_call(self, call: Callable[[Key], Awaitable[T]], what: str) -> T:
        """A call that costs no generation quota (model list, countTokens): not counted against a key's
        daily limit; a few usable keys are tried in turn, and a key Google rejects is taken out."""
        keys = [k for k in self.pool.keys if k.usable and k.provider == self.provider]
        failures: list[UpstreamFailure] = []
        start = self._list_offset
        self._list_offset += 1
        for i in range(min(len(keys), 5)):
            key = keys[(start + i) % len(keys)]
            try:
                return await call(key)
            except UpstreamFailure as f:
                failures.append(f)
                self.pool.learn(key, "", f)  # the project its error names (pool/learned.py)
                v = verdict(f)
                if v.key is KeyEffect.DISABLE:
                    log.warning("key %s taken out of rotation: %s: %s", key, f.kind, f.message)
                    self.pool.disable(key, f"{f.kind}: {f.message}")
                if not v.retry:
                    break
        raise DispatchError(failures, unavailable=None if failures else self.pool.unavailable(what, (), self.provider),
                            upstream=getattr(self.gemini, "name", self.provider))
