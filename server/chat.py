"""The generation service: validate and translate a request of any dialect, dispatch it, shape the answer.

Handlers call `prepare` with their dialect (server/dialects.py), then either `answer` (the Gemini reply, which
the handler shapes; `complete` does it for Chat Completions) or `events` with the dialect's stream shaper (SSE
bytes). Fake streaming and real streaming differ only in where the Gemini events come from; the shaping and
framing are the same.
"""
from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ujson

from .aliases import fallbacks_of, served_model
from .catalog import ModelCatalog, Variant, model_id, split_variant, valid_model_id
from .clock import Clock
from .dialects import CHAT, Dialect, Shaper
from .dispatch import Dispatcher, Trace
from .errors import bad_request, model_not_found
from .images import fetch_images
from .limits import ClientLimits
from .pool.policy import DispatchError, client_error, exhausted
from .request_context import RequestContext
from .reuse import Reuse, request_key
from .settings import Settings
from .signatures import ImageSignatures, unseal_body
from .translate import gemini_to_openai as g2o
from .translate.gemini_body import Extras, TranslationError
from .translate.sse import DONE, frames
from .upstream.http import HttpClient

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def random_string(length: int) -> str:
    """A disguise, not a secret: letters and digits from the fast generator's bits (secrets.choice per
    character costs ten times as much on the request path)."""
    n = random.getrandbits(6 * length)
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(out)


@dataclass
class ChatPlan:
    model: str           # the id the client asked for (shown back to it)
    stream: bool
    include_usage: bool
    body: bytes          # the encoded Gemini request, sent as-is on every attempt
    ctx: RequestContext  # the request's trace, and what hanging up does
    fake_stream: bool    # a stream answered from a non-streaming upstream call (FAKE_STREAMING)
    upstream: str = ""   # the Gemini model (the id without -search / -nothinking / -max)
    reuse_key: str = ""  # identical requests share this (in-flight sharing, the cache)
    marker: str | None = None  # the random string added upstream, removed from what the client gets
    how: str = "upstream"      # where the answer comes from: upstream, shared or cache
    cached: dict[str, Any] | None = None  # taken from the cache for this request
    dispatcher: Any = None     # the Gemini API's, or Vertex AI's
    prefer: str | None = None  # the key that issued the thought signatures the request carries back
    dialect: Dialect = CHAT    # the API the client speaks
    fallbacks: list[str] = field(default_factory=list)  # MODEL_FALLBACKS after the serving model, in order
    retranslate: Callable[[str], bytes] | None = None  # the request for another model (a fallback's traits)

    def __post_init__(self) -> None:
        self.upstream = self.upstream or self.model

    @property
    def trace(self) -> Trace:
        return self.ctx.trace


class ChatService:
    def __init__(self, catalog: ModelCatalog, dispatcher: Dispatcher, http: HttpClient, limits: ClientLimits,
                 settings: Callable[[], Settings], clock: Clock, reuse: Reuse | None = None,
                 signatures: ImageSignatures | None = None):
        self.reuse = reuse if reuse is not None else Reuse(settings, clock)
        self.signatures = signatures if signatures is not None else ImageSignatures()
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.http = http
        self.limits = limits
        self.settings = settings
        self.clock = clock

    async def prepare(self, req: Any, client_ip: str, ctx: RequestContext, raw: bytes = b"",
                      route: Any = None, dialect: Dialect = CHAT) -> ChatPlan:
        """Validate and translate; count the request against the client's limits (refusing it when over).
        `route`: a Vertex AI route (the router's), else the Gemini API."""
        trace = ctx.trace
        if not isinstance(req, dict):
            raise bad_request("the request body must be a JSON object")
        model = req.get("model")
        if not isinstance(model, str) or not model.strip():
            raise bad_request("model is required (a model id such as gemini-2.5-flash)", "model")
        model = model_id(model.strip())
        if not valid_model_id(model):
            raise bad_request("model is not a valid model id", "model")
        served = self.served(model)
        if served != model:
            trace.asked = model
        if route is not None:
            variant = Variant(route.upstream)
        else:
            variant = split_variant(served)
            if not await self.catalog.knows(served, variant):
                raise model_not_found(model if served == model else f"{served} (MODEL_ALIASES: {model})")
        stream = req.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise bad_request("stream must be a boolean", "stream")
        options = req.get("stream_options")
        include_usage = bool(isinstance(options, dict) and options.get("include_usage") is True)
        turns = req.get(dialect.turns)
        limit = self.settings().MAX_MESSAGES
        if isinstance(turns, list) and len(turns) > limit:
            raise bad_request(f"{dialect.turns} holds {len(turns)} items; at most {limit} are accepted "
                              "(MAX_MESSAGES)", dialect.turns)
        s = self.settings()
        trace.model = variant.base
        traits = self.catalog.traits(variant.base)
        marker = random_string(s.RANDOM_STRING_LENGTH) if s.RANDOM_STRING else None
        extras = Extras(search_prompt=s.SEARCH_PROMPT if variant.search else None, thinking=variant.thinking,
                        show_thinking=s.SHOW_THINKING, random_string=marker, image_signatures=self.signatures)
        urls = dialect.image_urls(req)
        # Translate (and so validate) before the request counts against the client's limits; remote
        # images are fetched only after that, then translated for real.
        body = self._translate(dialect, req, traits, {u: ("image/png", "") for u in urls}, extras)
        prefer = unseal_body(body)
        encoded = self._encode(body)
        refused = self.limits.admit(client_ip, trace)
        if refused is not None:
            raise refused
        images: dict[str, tuple[str, str]] = {}
        if urls:
            s = self.settings()
            images = await fetch_images(self.http, urls, max_images=s.IMAGE_FETCH_MAX_IMAGES,
                                        total_bytes=int(s.IMAGE_FETCH_TOTAL_MB * 1024 * 1024),
                                        max_bytes=int(s.IMAGE_FETCH_MAX_MB * 1024 * 1024),
                                        timeout=s.IMAGE_FETCH_TIMEOUT, allow_private=s.IMAGE_FETCH_ALLOW_PRIVATE)
            body = self._translate(dialect, req, traits, images, extras)
            unseal_body(body)
            encoded = self._encode(body)
        plan = ChatPlan(model, stream, include_usage, encoded, ctx, stream and s.FAKE_STREAMING,
                        upstream=variant.base, reuse_key=request_key(model, raw) if raw else "", marker=marker,
                        dispatcher=route.dispatcher if route is not None else self.dispatcher, prefer=prefer,
                        dialect=dialect)
        if route is None and s.MODEL_FALLBACKS:
            plan.fallbacks = fallbacks_of(variant.base, s.MODEL_FALLBACKS)
            def retranslate(other: str) -> bytes:
                body = self._translate(dialect, req, self.catalog.traits(other), images, extras)
                unseal_body(body)
                return self._encode(body)
            plan.retranslate = retranslate
        if plan.reuse_key and (not stream or plan.fake_stream) and (s.INFLIGHT_SHARING or self.reuse.caching()):
            plan.cached = self.reuse.take(plan.reuse_key)
            plan.how = "cache" if plan.cached is not None else self.reuse.how(plan.reuse_key)
            key = plan.reuse_key
            # hanging up does not cancel an answer the cache keeps or another identical request waits for
            ctx.keep_on_hang_up(lambda: self.reuse.keeps(key))
        else:
            plan.reuse_key = ""  # a real stream is neither shared nor cached; nor anything with both off
        return plan

    def served(self, model: Any) -> Any:
        """The model that serves a requested id (MODEL_ALIASES), or the id itself; anything else as it is."""
        if not isinstance(model, str):
            return model
        return served_model(model_id(model.strip()), self.settings().MODEL_ALIASES) or model

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        try:
            return ujson.dumps(body, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("The request holds text that is not valid Unicode (a lone surrogate such as "
                              "\\ud800).") from None
        except OverflowError:  # ujson: "Maximum recursion level reached" (tool arguments nested ~1 000 deep)
            raise bad_request("The request nests values too deeply to pass on.") from None

    @staticmethod
    def _translate(dialect: Dialect, req: dict[str, Any], traits: Any, images: dict[str, tuple[str, str]],
                   extras: Extras) -> dict[str, Any]:
        try:
            return dialect.translate(req, traits, images, extras)
        except TranslationError as e:
            raise bad_request(e.message, e.param) from None

    async def _dispatch(self, plan: ChatPlan) -> dict[str, Any]:
        """An answer from upstream, without this request's random string (so it can be shared or cached)."""
        spare = None
        if plan.reuse_key and self.reuse.caching():
            keep = self.reuse.spare(plan.reuse_key)
            spare = lambda reply: keep(_unmarked(reply, plan.marker))  # noqa: E731
        while True:
            try:
                reply = await plan.dispatcher.generate(plan.upstream, plan.body, plan.trace, spare, plan.prefer)
                return _unmarked(reply, plan.marker)
            except DispatchError as e:
                if not await self._fall_back(plan, e):
                    raise client_error(e) from None

    async def _fall_back(self, plan: ChatPlan, err: DispatchError) -> bool:
        """Move the plan to the next model of its fallback chain that may serve it, when every key of the current
        one is out of quota or resting; False when there is none (the error stands)."""
        if not exhausted(err):
            return False
        trace = plan.trace
        while plan.fallbacks:
            other = plan.fallbacks.pop(0)
            allowed = trace.client is None or self.limits.client_keys is None or \
                self.limits.client_keys.allows(trace.client, other)
            if not allowed or not self.catalog.allowed(other) or not await self.catalog.knows(other):
                continue
            if plan.retranslate is not None:
                plan.body = plan.retranslate(other)
            trace.asked = trace.asked or plan.model
            plan.upstream = plan.model = trace.model = other
            plan.prefer = None  # a signature of another model's key means nothing to this one
            return True
        return False

    async def _generate(self, plan: ChatPlan) -> dict[str, Any]:
        if plan.cached is not None:
            return plan.cached
        if not plan.reuse_key:
            return await self._dispatch(plan)
        reply, plan.how = await self.reuse.answer(plan.reuse_key, lambda: self._dispatch(plan), plan.ctx)
        return reply

    async def answer(self, plan: ChatPlan) -> tuple[dict[str, Any], str | None]:
        """The whole Gemini reply, and the fingerprint of the key that gave it (None: cache or shared)."""
        reply = await self._generate(plan)
        fp = self._answered_by(plan)
        self.signatures.remember(reply, fp)
        return reply, fp

    async def complete(self, plan: ChatPlan) -> dict[str, Any]:
        """A Chat Completions answer."""
        reply, fp = await self.answer(plan)
        return g2o.completion(reply, model=plan.model, created=int(self.clock.time()),
                              image_output=self.settings().IMAGE_OUTPUT.lower(), key_fp=fp)

    def chat_shaper(self, plan: ChatPlan) -> ChatShaper:
        return ChatShaper(g2o.ChunkStream(model=plan.model, created=int(self.clock.time()),
                                          include_usage=plan.include_usage,
                                          image_output=self.settings().IMAGE_OUTPUT.lower()))

    @staticmethod
    def _answered_by(plan: ChatPlan) -> str | None:
        """The key whose answer this is: none for an answer from the cache or shared with another request
        (its signatures go out unsealed; should Gemini refuse them later, the placeholder retry covers it)."""
        return plan.trace.key_fp if plan.how == "upstream" else None

    async def events(self, plan: ChatPlan, shaper: Shaper) -> AsyncGenerator[bytes, None]:
        """SSE bytes in the shaper's dialect, as they are ready. Raises ApiError on failure (nothing of the
        shaper's end has gone out then)."""
        if plan.fake_stream:
            reply = await self._generate(plan)
            shaper.key_fp = self._answered_by(plan)
            self.signatures.remember(reply, shaper.key_fp)
            yield shaper.feed(reply) + shaper.finish()
            return
        started = False
        while True:
            try:
                async for event in plan.dispatcher.stream(plan.upstream, plan.body, plan.trace, plan.prefer):
                    started = True
                    shaper.key_fp = plan.trace.key_fp
                    self.signatures.remember(event, shaper.key_fp)
                    out = shaper.feed(_unmarked(event, plan.marker))
                    if out:
                        yield out
                break
            except DispatchError as e:
                if started or not await self._fall_back(plan, e):
                    raise client_error(e) from None
                shaper.model = plan.model  # the answer says which model served it
        yield shaper.finish()


class ChatShaper:
    """Chat Completions chunks (`data: {…}` lines, then `data: [DONE]`)."""

    def __init__(self, chunks: g2o.ChunkStream):
        self.chunks = chunks

    @property
    def key_fp(self) -> str | None:
        return self.chunks.key_fp

    @key_fp.setter
    def key_fp(self, fp: str | None) -> None:
        self.chunks.key_fp = fp

    @property
    def model(self) -> str:
        return self.chunks.model

    @model.setter
    def model(self, model: str) -> None:
        self.chunks.model = model

    def feed(self, event: Mapping[str, Any]) -> bytes:
        out = self.chunks.feed(event)
        return frames(out) if out else b""

    def finish(self) -> bytes:
        return frames(self.chunks.finish()) + DONE


def _unmarked(reply: dict[str, Any], marker: str | None) -> dict[str, Any]:
    """The reply without the random string, should the model have echoed it (checked cheaply first)."""
    if not marker:
        return reply
    for cand in reply.get("candidates") or ():
        parts = (cand.get("content") or {}).get("parts") if isinstance(cand, dict) else None
        for p in parts or ():
            if isinstance(p, dict) and isinstance(p.get("text"), str) and marker in p["text"]:
                p["text"] = p["text"].replace(marker, "")
    return reply

