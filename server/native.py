"""The Gemini API itself, through the key pool: for Gemini-native clients (google-genai, Gemini CLI,
@ai-sdk/google, LiteLLM's `gemini/` provider, SillyTavern's "Google AI Studio" source with a reverse-proxy URL).

Bodies go upstream byte for byte (nothing dropped or rewritten); only the key is the pool's.
Generation and embedding calls are counted, cooled down and retried exactly as chat requests;
countTokens and the model list cost no quota and are not counted. Whenever Gemini answered 200, the
client gets what Gemini sent: a blocked prompt, a reply cut at the token limit, every event of a stream
(only what the non-streaming route would retry with another key is retried, and only before anything
was handed on). Keyloom's own errors take Gemini's shape, with the details Gemini clients decide by
(see `gemini_error`).
"""
from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable
from typing import Any

from .catalog import ModelCatalog, valid_model_id
from .dispatch import Dispatcher, Trace
from .errors import ApiError
from .limits import ClientLimits
from .pool.keys import Key
from .pool.policy import DispatchError, client_error, verdict
from .settings import Settings
from .upstream.failures import BadResponse, EmptyReply, UpstreamFailure, classify_reply

GENERATE = "generateContent"
STREAM = "streamGenerateContent"
COUNT = "countTokens"
EMBED = ("embedContent", "batchEmbedContents")
METHODS = (GENERATE, STREAM, COUNT, *EMBED)

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 405: "METHOD_NOT_ALLOWED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_RPC = "type.googleapis.com/google.rpc."
_VERSION = re.compile(r"^/(?:gemini/)?(v1(?:alpha|beta)?)/")


def api_version(path: str) -> str:
    """The Gemini API version a request path asks for (v1beta when it names none)."""
    m = _VERSION.match(path)
    return m.group(1) if m else "v1beta"


def error_details(err: ApiError) -> list[dict[str, Any]]:
    """google.rpc details for one of Keyloom's errors, as Gemini sends them with its own.

    Gemini clients decide whether and when to retry from these, not from headers: Gemini CLI gives up at
    once on a QuotaFailure whose quotaId says PerDay (or a RetryInfo over 300s), waits the RetryInfo delay
    otherwise, and without either retries with its own back-off for minutes. So every error that carries
    Retry-After gets a RetryInfo with the same delay, and a 429 for a quota (every key over Google's quota,
    or Keyloom's per-client limits) a QuotaFailure saying per day or per minute: per day when waiting helps
    only once the quota day ends (policy.py and limits.py then set `x-should-retry: false`)."""
    details: list[dict[str, Any]] = []
    if err.status == 429 and err.code == "rate_limit_exceeded":
        per = "Day" if err.headers.get("x-should-retry") == "false" else "Minute"
        details.append({"@type": _RPC + "QuotaFailure", "violations": [
            {"quotaMetric": "keyloom/generate_requests", "quotaId": f"KeyloomRequestsPer{per}"}]})
    retry = err.headers.get("Retry-After", "")
    if retry.isdigit():
        details.append({"@type": _RPC + "RetryInfo", "retryDelay": f"{int(retry)}s"})
    return details


def gemini_error(err: ApiError) -> dict[str, Any]:
    """Our error in Gemini's shape: {"error": {"code", "message", "status", "details"?}}."""
    body: dict[str, Any] = {"code": err.status, "message": err.message,
                            "status": _STATUS_NAMES.get(err.status, "UNKNOWN")}
    details = error_details(err)
    if details:
        body["details"] = details
    return {"error": body}


def unauthorized(version: str = "v1beta") -> ApiError:
    """The wrong-key answer on the Gemini routes, in the words of the clients that use them."""
    return ApiError(401, "API key not valid. Keyloom takes its PASSWORD as the Gemini API key, sent the way Gemini "
                         "clients send theirs: in the x-goog-api-key header or as ?key=<PASSWORD> (Gemini CLI and the "
                         "SDKs: GEMINI_API_KEY=<PASSWORD>, with Keyloom's address as the base URL; this request asked "
                         f"for API version {version}).",
                    code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="keyloom"'})


def not_found(model: str, version: str = "v1beta") -> ApiError:
    return ApiError(404, f"models/{model} is not found for API version {version}, or is not supported here. Call "
                         "ListModels to see the models Keyloom serves.", code="model_not_found")


def _finished(event: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("finishReason") for c in event.get("candidates") or ())


def _blocked(event: dict[str, Any]) -> bool:
    feedback = event.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason")) and not event.get("candidates")


def _has_parts(event: dict[str, Any]) -> bool:
    for c in event.get("candidates") or ():
        content = c.get("content") if isinstance(c, dict) else None
        if isinstance(content, dict) and content.get("parts"):
            return True
    return False


class NativeService:
    def __init__(self, catalog: ModelCatalog, dispatcher: Dispatcher, limits: ClientLimits,
                 settings: Callable[[], Settings]):
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.limits = limits
        self.settings = settings

    # -- models ----------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        c = self.catalog
        entries = []
        for mid in c.chat_models() + c.embedding_models():
            entry = c.entry(mid)
            entries.append(entry if entry is not None else {
                "name": f"models/{mid}", "displayName": mid,
                "supportedGenerationMethods": ["generateContent", "countTokens"]})
        return entries

    def model(self, mid: str, version: str = "v1beta") -> dict[str, Any]:
        for m in self.models():
            if m.get("name") == f"models/{mid}":
                return m
        raise not_found(mid, version)

    # -- calls -----------------------------------------------------------------------------------

    async def admit(self, model: str, method: str, client_ip: str, trace: Trace, version: str = "v1beta") -> None:
        if method not in METHODS:
            raise ApiError(404, f"Unknown method {method[:64]}; Keyloom serves {', '.join(METHODS)}.",
                           code="not_found")
        if not valid_model_id(model):
            raise ApiError(400, "The model in the path is not a valid model id (letters, digits and ._-:/, at "
                                "most 128 characters).", code="invalid_model")
        trace.model = model
        known = await (self.catalog.knows_embedding(model) if method in EMBED else self.catalog.knows(model))
        if not known:
            raise not_found(model, version)
        if method != COUNT:
            refused = self.limits.admit(client_ip, trace)
            if refused is not None:
                raise refused

    async def call(self, model: str, method: str, body: bytes, trace: Trace) -> dict[str, Any]:
        gemini = self.dispatcher.gemini
        try:
            if method == COUNT:
                return await self.dispatcher.free_call(lambda key: gemini.post(key.secret, model, COUNT, body),
                                                       model)

            last: list[dict[str, Any]] = []  # the last reply that was tried again with another key

            async def once(key: Key) -> dict[str, Any]:
                reply = await gemini.post(key.secret, model, method, body)
                if method == GENERATE:
                    failure = classify_reply(reply)
                    if failure is not None and verdict(failure).retry:  # empty or filtered: another key
                        last[:] = [reply]
                        raise failure
                return reply  # anything else Gemini answered (a blocked prompt too) is the client's

            if method in EMBED:
                return await self.dispatcher.call(model, once, trace, succeeded=lambda _: None)
            try:
                return await self.dispatcher.call(model, once, trace)
            except DispatchError as e:
                if last and e.failures and e.failures[-1].status == 200:
                    return last[0]  # no key did better: the client gets what Gemini answered, as it was
                raise
        except DispatchError as e:
            raise client_error(e) from None

    async def _open(self, key: Key, model: str, body: bytes, tried: list[dict[str, Any]]
                    ) -> tuple[AsyncGenerator[dict[str, Any], None], list[dict[str, Any]], bool]:
        """Start a stream and read it up to its first event with output, or to the one that ends it:
        → (the stream, the events read so far, whether they ended the reply). A reply that the non-streaming
        route would try again with another key (empty, filtered before any output) raises here, before
        anything reached the client (its events are kept in `tried`: when no key does better, they are what
        the client gets); anything else Gemini sent (a blocked prompt: one event with promptFeedback.blockReason)
        is the answer."""
        events = self.dispatcher.gemini.stream(key.secret, model, body)
        read: list[dict[str, Any]] = []
        try:
            async for event in events:
                read.append(event)
                if _finished(event) or _blocked(event):
                    failure = classify_reply(event)
                    if failure is not None and verdict(failure).retry:
                        tried[:] = read
                        raise failure
                    return events, read, True
                if _has_parts(event):
                    return events, read, False
            raise EmptyReply("Gemini's stream ended without any output", 200)
        except BaseException:
            await events.aclose()
            raise

    async def stream(self, model: str, body: bytes, trace: Trace) -> AsyncGenerator[dict[str, Any], None]:
        """Every event Gemini sent, as it came. Keys are tried as for any stream (dispatch.py) until one
        starts with output; after that a failure ends the stream with an ApiError, except once Gemini's own
        events ended with a finish reason: then the client has Gemini's whole reply and nothing is added."""
        d = self.dispatcher
        tried: list[dict[str, Any]] = []
        try:
            # the dispatcher's rounds, with `_open` reading each stream's start (see Dispatcher.stream)
            attempts = d._attempts(model, trace)
            width, grow, most = d._widths()
            while True:
                won = await d._round(attempts, await d._keys(attempts, width),
                                     lambda k: self._open(k, model, body, tried))
                if won is not None:
                    break
                width = min(width + grow, most)
        except DispatchError as e:
            if tried and e.failures and e.failures[-1].status == 200:
                for event in tried:  # no key did better: Gemini's own events, as they were
                    yield event
                return
            raise client_error(e) from None
        key, (events, read, finished) = won
        last = next((e for e in reversed(read) if e.get("usageMetadata")), read[-1])
        try:
            for event in read:
                yield event
            async for event in events:
                finished = finished or _finished(event)
                if event.get("usageMetadata"):
                    last = event
                yield event
            if not finished:
                raise BadResponse("Gemini's stream ended before the reply was complete", 200)
        except UpstreamFailure as f:
            # After Gemini's events ended the reply, a broken or closed connection adds nothing; an error Gemini
            # itself sent is still Gemini's, and the client gets it as Gemini sent it.
            if finished and f.google_error is not None:
                yield {"error": f.google_error}  # Gemini's own error after its reply: passed on as it was
            elif not finished:
                try:
                    attempts.failed(key, f, final=True)
                except DispatchError as e:
                    raise client_error(e) from None
        finally:
            await events.aclose()
        attempts.succeeded(key, last)
