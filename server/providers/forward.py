"""Requests for an OpenAI-compatible upstream: checked, counted against the client's limits, sent on
with only `model` rewritten, answered with the upstream's own bytes (streams event by event, as they
come)."""
from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import ujson

from ..dispatch import Trace
from ..errors import ApiError, bad_request
from ..limits import ClientLimits
from ..pool.policy import DispatchError, client_error
from ..settings import Settings
from ..upstream.failures import UpstreamFailure
from .openai_compat import usage_of
from .router import Route


class Forwarder:
    def __init__(self, limits: ClientLimits, settings: Callable[[], Settings]):
        self.limits = limits
        self.settings = settings

    def prepare(self, route: Route, req: Any, client_ip: str, trace: Trace) -> bytes:
        if not isinstance(req, dict):
            raise bad_request("the request body must be a JSON object")
        messages = req.get("messages")
        limit = self.settings().MAX_MESSAGES
        if isinstance(messages, list) and len(messages) > limit:
            raise bad_request(f"messages holds {len(messages)} messages; at most {limit} are accepted "
                              "(MAX_MESSAGES)", "messages")
        if "stream" in req and not isinstance(req["stream"], bool) and req["stream"] is not None:
            raise bad_request("stream must be a boolean", "stream")
        trace.model = route.upstream
        refused = self.limits.admit(client_ip, trace)
        if refused is not None:
            raise refused
        try:
            return ujson.dumps({**req, "model": route.upstream}, ensure_ascii=False,
                               escape_forward_slashes=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("The request holds text that is not valid Unicode.") from None

    async def complete(self, route: Route, body: bytes, trace: Trace, path: str = "/chat/completions") -> bytes:
        async def once(key: Any) -> bytes:
            return await route.client.post(key.secret, path, body)

        try:
            return await route.dispatcher.call(route.upstream, once, trace, succeeded=usage_of)
        except DispatchError as e:
            raise client_error(e) from None

    async def stream(self, route: Route, body: bytes, trace: Trace) -> AsyncGenerator[bytes, None]:
        async def once(key: Any) -> Any:
            return await route.client.open(key.secret, "/chat/completions", body)

        try:
            resp = await route.dispatcher.call(route.upstream, once, trace, succeeded=lambda _: None)
        except DispatchError as e:
            raise client_error(e) from None
        try:
            async for piece in route.client.events(resp, self.settings().UPSTREAM_STREAM_IDLE_TIMEOUT):
                yield piece
        except UpstreamFailure as f:
            raise ApiError(502, f"{route.provider}: the stream broke off: {f.message}", type="server_error",
                           code="upstream_stream_broken") from None
