"""The Anthropic Messages API (Claude Code, the anthropic SDKs): POST /v1/messages and
/v1/messages/count_tokens. Parse, hand to the generation service with the Messages dialect, write the message
or its event stream; errors in Anthropic's shape, chosen by what Claude Code does with them
(server/dialect_errors.py)."""
from __future__ import annotations

import secrets
from typing import Any

import ujson

from ..catalog import model_id, split_variant
from ..dialect_errors import as_messages
from ..dialects import MESSAGES, PING, NamedEventShaper, named_events
from ..errors import ApiError, bad_request, model_not_found
from ..request_context import RequestContext
from ..translate import gemini_to_anthropic as g2a
from ..translate.anthropic_to_gemini import count_tokens_request
from ..translate.gemini_body import TranslationError
from ..translate.sse import json_bytes
from .base import LoggedHandler
from .streaming import StreamingHandler


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


class _MessagesErrors:
    def shape_error(self, err: ApiError) -> tuple[int, dict[str, Any]]:
        return as_messages(err)


class MessagesHandler(_MessagesErrors, StreamingHandler):
    keepalive_frame = PING

    async def serve(self, req: Any, ctx: RequestContext) -> None:
        route = self.gemini_route(req)
        kl = self.kl
        plan = await kl.chat.prepare(req, self.client_ip, ctx, self.raw_body, route, MESSAGES)
        mid = new_message_id()
        if not plan.stream:
            async def respond() -> dict[str, Any]:
                reply, fp = await kl.chat.answer(plan)
                return g2a.message(reply, model=plan.model, message_id=mid, key_fp=fp)

            await self.write_answer(respond())
            return
        shaper = NamedEventShaper(g2a.MessageStream(model=plan.model, message_id=mid))
        await self.write_event_stream(kl.chat.events(plan, shaper), kl.settings.FAKE_STREAMING_INTERVAL)

    def error_frame(self, err: ApiError) -> bytes:
        """A started stream ends with an `error` event (Claude Code then sends the turn again)."""
        return named_events([as_messages(err)[1]])


class CountTokensHandler(_MessagesErrors, LoggedHandler):
    """Gemini's countTokens, which costs no quota: not counted against the keys or the client's limits."""

    async def post(self) -> None:
        req = self.json_body()
        if not isinstance(req, dict):
            raise bad_request("the request body must be a JSON object")
        asked = req.get("model")
        if not isinstance(asked, str) or not asked.strip():
            raise bad_request("model is required", "model")
        kl = self.kl
        served = model_id(kl.chat.served(asked))
        variant = split_variant(served)
        if not await kl.catalog.knows(served, variant):
            raise model_not_found(asked)
        try:
            body = count_tokens_request({**req, "model": variant.base}, kl.catalog.traits(variant.base))
        except TranslationError as e:
            raise bad_request(e.message, e.param) from None
        ctx = self.begin()
        if self.client_key is not None:  # free, so not counted; but a key's model list holds here too
            refused = kl.client_keys.model_refusal(self.client_key, variant.base)
            if refused is not None:
                raise refused
        await kl.native.admit(variant.base, "countTokens", self.client_ip, ctx.trace)
        raw = ujson.dumps(body, ensure_ascii=False, escape_forward_slashes=False).encode()
        reply = await kl.native.call(variant.base, "countTokens", raw, ctx.trace)
        total = reply.get("totalTokens") if isinstance(reply, dict) else None
        self.set_header("Content-Type", "application/json")
        self.finish(json_bytes({"input_tokens": int(total) if isinstance(total, int) else 0}))
