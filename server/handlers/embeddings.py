"""POST /v1/embeddings: parse, hand to the embedding service, write `CreateEmbeddingResponse`."""
from __future__ import annotations

from .base import ClientGone, LoggedHandler


class EmbeddingsHandler(LoggedHandler):
    async def post(self) -> None:
        req = self.json_body()
        trace = self.begin()
        service = self.kl.embeddings
        try:
            plan = await service.prepare(req, self.client_ip, trace)
            self.write_json(await self.cancellable(service.embed(plan, trace)))
        except ClientGone:
            return
