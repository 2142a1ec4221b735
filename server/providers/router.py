"""Which provider serves a model id. Gemini API models keep their bare ids; Vertex AI models are bare
when no Gemini key is configured and carry VERTEX_MODEL_PREFIX when one is (both can then be chosen);
an OpenAI-compatible upstream's models carry its `prefix` when it has one, else `<name>/` only where
an id is already taken. The map is rebuilt only when a model list changes, and with no provider
besides Gemini the router costs a request nothing."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from ..catalog import ModelCatalog
from ..dispatch import Dispatcher
from ..pool.keys import Key, KeyPool
from ..pool.policy import DispatchError
from .config import OpenAIUpstream, VertexConfig
from .openai_compat import OpenAICompatClient

log = logging.getLogger("keyloom.router")


@dataclass(frozen=True)
class Route:
    provider: str       # vertex, or an OpenAI-compatible upstream's name
    kind: str           # "vertex" or "openai"
    upstream: str       # the model id the upstream knows
    dispatcher: Dispatcher
    client: Any


@dataclass
class Upstream:
    cfg: OpenAIUpstream
    client: Any
    dispatcher: Dispatcher
    models: list[str] = field(default_factory=list)
    error: str | None = None


class Router:
    def __init__(self, catalog: ModelCatalog, pool: KeyPool, vertex: tuple[VertexConfig, Any, Dispatcher] | None,
                 upstreams: list[Upstream]):
        self.catalog = catalog
        self.pool = pool
        self.vertex = vertex
        self.upstreams = upstreams
        for u in upstreams:
            u.models = list(u.cfg.models or ())
        self.active = bool(vertex or upstreams)
        self._map: dict[str, Route] = {}
        self._built_for: tuple[Any, ...] | None = None
        self._version = 0

    def _build(self) -> dict[str, Route]:
        stamp = (self.catalog.loaded_at, self._version, self.pool.has("gemini"))
        if stamp == self._built_for:
            return self._map
        taken = set(self.catalog.chat_models(all_models=True)) if self.pool.has("gemini") else set()
        out: dict[str, Route] = {}
        if self.vertex is not None:
            cfg, client, dispatcher = self.vertex
            prefix = cfg.prefix if self.pool.has("gemini") else ""
            for m in cfg.models:
                out[prefix + m] = Route("vertex", "vertex", m, dispatcher, client)
        for u in self.upstreams:
            for m in u.models:
                mid = (u.cfg.prefix or "") + m
                if u.cfg.prefix is None and (mid in taken or mid in out):
                    mid = f"{u.cfg.name}/{m}"
                if mid in taken or mid in out:
                    log.warning("model %s of %s is already served by another provider; give %s a prefix",
                                mid, u.cfg.name, u.cfg.name)
                    continue
                out[mid] = Route(u.cfg.name, "openai", m, u.dispatcher, u.client)
        self._map, self._built_for = out, stamp
        return out

    def resolve(self, mid: Any) -> Route | None:
        """The route of a model id served by Vertex AI or an OpenAI-compatible upstream; None: Gemini API."""
        if not self.active or not isinstance(mid, str):
            return None
        route = self._build().get(mid)
        if route is None or not self.catalog.allowed(mid, mid):
            return None
        return route

    def chat_models(self) -> list[str]:
        ids = self.catalog.chat_models()
        if self.active:
            ids += [m for m in self._build() if self.catalog.allowed(m, m)]
        return ids

    def provider_of(self, mid: str) -> str:
        route = self.resolve(mid)
        return route.provider if route is not None else "gemini"

    async def refresh(self) -> None:
        """Ask the upstreams configured with `models = "auto"` for their lists."""
        for u in self.upstreams:
            if u.cfg.models is not None:
                continue
            try:
                u.models = await u.dispatcher.free_call(functools.partial(_list_models, u.client), "models")
                u.error = None
            except DispatchError as e:
                u.error = str(e)
                log.warning("could not list the models of %s: %s", u.cfg.name, e)
            except Exception as e:  # never take the process down from a background refresh
                u.error = type(e).__name__
                log.exception("model list of %s failed", u.cfg.name)
        self._version += 1


async def _list_models(client: OpenAICompatClient, key: Key) -> list[str]:
    return await client.list_models(key.secret)
