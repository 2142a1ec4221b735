"""GET /v1/models and /v1/models/{id} in the OpenAI ListModelsResponse / Model shapes."""
from __future__ import annotations

from ..catalog import model_id
from ..errors import model_not_found
from .base import ApiHandler


def _model(handler: ApiHandler, mid: str) -> dict:
    return {"id": mid, "object": "model", "created": handler.kl.catalog.created(mid), "owned_by": "google"}


class ModelsHandler(ApiHandler):
    async def get(self) -> None:
        await self.kl.catalog.ensure_loaded()
        self.write_json({"object": "list", "data": [_model(self, m) for m in self.kl.catalog.chat_models()]})


class ModelHandler(ApiHandler):
    async def get(self, name: str) -> None:
        await self.kl.catalog.ensure_loaded()
        mid = model_id(name)
        if mid not in self.kl.catalog.chat_models():
            raise model_not_found(mid)
        self.write_json(_model(self, mid))
