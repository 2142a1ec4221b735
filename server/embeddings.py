"""The embeddings service: validate, split into Gemini batches, dispatch them through the key pool
(quotas, cool-downs and retries as for chat), put the vectors back in order."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import ujson

from .catalog import ModelCatalog, valid_model_id
from .dispatch import Dispatcher, Trace
from .errors import bad_request, model_not_found
from .limits import ClientLimits
from .pool.keys import Key
from .pool.policy import DispatchError, client_error
from .settings import Settings
from .translate import embeddings as emb
from .upstream.failures import BadResponse


class EmbeddingService:
    def __init__(self, catalog: ModelCatalog, dispatcher: Dispatcher, limits: ClientLimits,
                 settings: Callable[[], Settings]):
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.limits = limits
        self.settings = settings

    async def prepare(self, req: Any, client_ip: str, trace: Trace) -> emb.EmbeddingPlan:
        try:
            plan = emb.parse(req, self.settings().EMBEDDING_MODEL_MAP)
        except emb.EmbeddingError as e:
            raise bad_request(e.message, e.param) from None
        if not valid_model_id(plan.model):
            raise bad_request("model is not a valid model id", "model")
        trace.model = plan.model
        if not await self.catalog.knows_embedding(plan.model):
            raise model_not_found(plan.requested)
        refused = self.limits.admit(client_ip, trace)
        if refused is not None:
            raise refused
        return plan

    async def _batch(self, plan: emb.EmbeddingPlan, body: dict[str, Any], trace: Trace) -> list[list[float]]:
        encoded = ujson.dumps(body, ensure_ascii=False, escape_forward_slashes=False).encode("utf-8")
        n = len(body["requests"])
        estimate = sum(emb.estimate_tokens(r["content"]["parts"][0]["text"]) for r in body["requests"])

        async def once(key: Key) -> list[list[float]]:
            reply = await self.dispatcher.gemini.post(key.secret, plan.model, "batchEmbedContents", encoded)
            try:
                return emb.vectors(reply, n)
            except ValueError as e:
                raise BadResponse(str(e), 200) from None

        return await self.dispatcher.call(plan.model, once, trace,
                                          succeeded=lambda _: {"usageMetadata": {"promptTokenCount": estimate}})

    async def embed(self, plan: emb.EmbeddingPlan, trace: Trace) -> dict[str, Any]:
        bodies = emb.batches(plan)
        traces = [Trace(model=plan.model) for _ in bodies]
        try:
            parts = await asyncio.gather(*(self._batch(plan, b, t) for b, t in zip(bodies, traces, strict=True)))
        except DispatchError as e:
            raise client_error(e) from None
        finally:
            trace.attempts = sum(t.attempts for t in traces)
            trace.key_fp = next((t.key_fp for t in traces if t.key_fp), None)
        out = emb.response(plan, [v for part in parts for v in part])
        trace.prompt_tokens = out["usage"]["prompt_tokens"]
        return out
