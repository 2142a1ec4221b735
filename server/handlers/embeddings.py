"""POST /v1/embeddings: parse, hand to the embedding service, write `CreateEmbeddingResponse`."""
from __future__ import annotations

from ..errors import ApiError
from ..request_context import ClientGone
from .base import LoggedHandler


class EmbeddingsHandler(LoggedHandler):
    async def post(self) -> None:
        req = self.json_body()
        ctx = self.begin()
        trace = ctx.trace
        service = self.kl.embeddings
        route = self.kl.router.resolve(req.get("model")) if isinstance(req, dict) else None
        if route is not None:
            if route.kind != "openai":
                raise ApiError(400, f"Embeddings are not served through {route.provider}; use a Gemini API "
                                    "embedding model such as gemini-embedding-001.", param="model")
            body = self.kl.forwarder.prepare(route, req, self.client_ip, trace)
            data = await ctx.run(self.kl.forwarder.complete(route, body, trace, "/embeddings"))
            self.set_header("Content-Type", "application/json")
            self.finish(data)
            return
        try:
            plan = await service.prepare(req, self.client_ip, trace)
            self.write_json(await ctx.run(service.embed(plan, trace)))
        except ClientGone:
            return
