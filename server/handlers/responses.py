"""The OpenAI Responses API (Codex CLI, the Agents SDK, the openai SDK's `responses`): POST /v1/responses, and
GET / DELETE /v1/responses/{id} for stored answers. Parse, hand to the generation service with the Responses
dialect, write the Response object or its typed event stream."""
from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from ..dialect_errors import as_responses
from ..dialects import RESPONSES, NamedEventShaper, named_events
from ..errors import ApiError
from ..request_context import RequestContext
from ..stored_responses import new_response_id
from ..translate import gemini_to_responses as g2r
from .base import ApiHandler
from .streaming import StreamingHandler


class ResponsesShaper(NamedEventShaper):
    """Also keeps the final Response (to store it), and ends a failed stream with `response.failed`."""

    stream: g2r.ResponseStream
    completed: dict[str, Any] | None = None  # the final Response, once the stream ended well

    def finish(self) -> bytes:
        events = self.begin() + self.stream.finish()
        last = events[-1] if events else {}
        if last.get("type") in ("response.completed", "response.incomplete"):
            self.completed = last.get("response")
        return named_events(events)

    def fail(self, code: str, message: str) -> bytes:
        return named_events(self.begin() + self.stream.fail(code, message))


class _ResponsesErrors:
    def shape_error(self, err: ApiError) -> tuple[int, dict[str, Any]]:
        shaped = as_responses(err)
        return shaped.status, shaped.body()


class ResponsesHandler(_ResponsesErrors, StreamingHandler):
    shaper: ResponsesShaper | None = None

    async def serve(self, req: Any, ctx: RequestContext) -> None:
        route = self.gemini_route(req)
        kl = self.kl
        full = await kl.responses.continued(req)
        plan = await kl.chat.prepare(full, self.client_ip, ctx, self.raw_body, route, RESPONSES)
        rid = new_response_id()
        created = int(kl.clock.time())
        # the answer is stored before the client has it (or its last event): see server/stored_responses.py
        if not plan.stream:
            async def respond() -> dict[str, Any]:
                reply, fp = await kl.chat.answer(plan)
                out = g2r.response(reply, request=req, response_id=rid, model=plan.model, created=created,
                                   key_fp=fp)
                await kl.responses.keep(full, out)
                return out

            await self.write_answer(respond())
            return
        shaper = self.shaper = ResponsesShaper(g2r.ResponseStream(request=req, response_id=rid, model=plan.model,
                                                                  created=created))

        async def stored_before_the_end(events: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
            kept = False
            async with aclosing(events):  # closed with this one (a client gone): its own clean-up runs at once
                async for chunk in events:  # the chunk that completes the shaper carries the final event
                    if shaper.completed is not None and not kept:
                        kept = True
                        await kl.responses.keep(full, shaper.completed)
                    yield chunk

        await self.write_event_stream(stored_before_the_end(kl.chat.events(plan, shaper)),
                                      kl.settings.FAKE_STREAMING_INTERVAL)

    def error_frame(self, err: ApiError) -> bytes:
        """A started stream ends with `error` and `response.failed`. Codex reads only the latter's code: it
        stops on `insufficient_quota` (not in the spec's enum of codes, but what OpenAI itself sends and Codex
        acts on), waits on `rate_limit_exceeded`, and tries again on anything else."""
        shaped = as_responses(err)
        if self.shaper is None:
            return super().error_frame(shaped)
        code = shaped.code if shaped.code in ("insufficient_quota", "rate_limit_exceeded") else \
            "invalid_prompt" if shaped.status < 500 else "server_error"
        return self.shaper.fail(code, shaped.message)


class StoredResponseHandler(_ResponsesErrors, ApiHandler):
    async def get(self, rid: str) -> None:
        response, _ = await self.kl.responses.get(rid)
        self.write_json(response)

    async def delete(self, rid: str) -> None:
        await self.kl.responses.delete(rid)
        self.write_json({"id": rid, "object": "response", "deleted": True})
