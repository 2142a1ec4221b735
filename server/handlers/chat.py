"""POST /v1/chat/completions: parse, hand to the generation service, write JSON or an event stream."""
from __future__ import annotations

from typing import Any

from ..request_context import RequestContext
from .streaming import StreamingHandler


class ChatCompletionsHandler(StreamingHandler):
    async def serve(self, req: Any, ctx: RequestContext) -> None:
        route = self.kl.router.resolve(self.kl.chat.served(req.get("model"))) if isinstance(req, dict) else None
        if route is not None and route.kind == "openai" and isinstance(req, dict):
            await self._forward(route, req, ctx)
            return
        plan = await self.kl.chat.prepare(req, self.client_ip, ctx, self.raw_body, route)
        if plan.how != "upstream":
            self.set_header("X-Keyloom-Answer", plan.how)  # cache: a paid answer nobody had received
        if not plan.stream:
            await self.write_answer(self.kl.chat.complete(plan))
        else:
            # Both kinds of stream wait up to one keep-alive interval for their first output (for fake streaming,
            # the whole answer), so that a quick failure (every key over quota, a blocked prompt, thinking that
            # used up max_tokens) still gets its own HTTP status rather than a 200 and an error event.
            chat = self.kl.chat
            await self.write_event_stream(chat.events(plan, chat.chat_shaper(plan)),
                                          self.kl.settings.FAKE_STREAMING_INTERVAL)

    async def _forward(self, route: Any, req: dict, ctx: RequestContext) -> None:
        """An OpenAI-compatible upstream's model: its answer passes through as it is."""
        fwd = self.kl.forwarder
        body = fwd.prepare(route, req, self.client_ip, ctx.trace)
        if req.get("stream") is not True:
            data = await fwd.complete(route, body, ctx.trace)
            self.set_header("Content-Type", "application/json")
            self.finish(data)
            return
        await self.write_event_stream(fwd.stream(route, body, ctx.trace), self.kl.settings.FAKE_STREAMING_INTERVAL)
