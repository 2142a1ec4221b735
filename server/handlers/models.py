"""GET /v1/models and /v1/models/{id} in the OpenAI ListModelsResponse / Model shapes."""
from __future__ import annotations

from ..aliases import listed_aliases
from ..catalog import model_id
from ..errors import bad_request, model_not_found
from .base import ApiHandler
from .native import GeminiErrors, NativeModelsHandler, wants_gemini


def _model(handler: ApiHandler, mid: str) -> dict:
    provider = handler.kl.router.provider_of(mid)
    return {"id": mid, "object": "model", "created": handler.kl.catalog.created(mid),
            "owned_by": "google" if provider in ("gemini", "vertex") else provider}


def _alias(handler: ApiHandler, name: str, target: str) -> dict:
    """An alias (MODEL_ALIASES) as a model a picker can show: its owner names the model that serves it."""
    return {"id": name, "object": "model", "created": handler.kl.catalog.created(target),
            "owned_by": f"keyloom alias of {target}"}


class _Shared(GeminiErrors, ApiHandler):
    """/v1/models serves OpenAI clients and, told apart by their headers, Gemini clients."""

    def gemini_errors(self) -> bool:
        return wants_gemini(self)


class ModelsHandler(_Shared):
    """Chat models; `?type=embedding` for embedding models, `?type=all` for both (chat pickers stay clean)."""

    async def get(self) -> None:
        catalog = self.kl.catalog
        await catalog.ensure_loaded()
        if wants_gemini(self):
            return NativeModelsHandler.write_models(self, None)  # type: ignore[arg-type]
        kind = self.get_query_argument("type", "chat")
        if kind not in ("chat", "embedding", "all"):
            raise bad_request("type must be chat, embedding or all", "type")
        ids = (self.kl.router.chat_models() if kind != "embedding" else []) + \
              (catalog.embedding_models() if kind != "chat" else [])
        data = [_model(self, m) for m in ids]
        if kind != "embedding":
            data += [_alias(self, name, target) for name, target in listed_aliases(self.kl.settings.MODEL_ALIASES)]
        ck = self.client_key
        if ck is not None and ck.models:  # a client key sees the models it may use (aliases by what serves them)
            allows, served = self.kl.client_keys.allows, self.kl.chat.served
            data = [m for m in data if allows(ck, served(m["id"]))]
        self.write_json({"object": "list", "data": data})


class ModelHandler(_Shared):
    async def get(self, name: str) -> None:
        await self.kl.catalog.ensure_loaded()
        if wants_gemini(self):
            return NativeModelsHandler.write_models(self, model_id(name))  # type: ignore[arg-type]
        mid = model_id(name)
        target = self.kl.settings.MODEL_ALIASES.get(mid)
        if target is not None:
            self.write_json(_alias(self, mid, target))
            return
        if not (self.kl.catalog.listed(mid) or self.kl.router.resolve(mid) is not None):
            raise model_not_found(mid)
        self.write_json(_model(self, mid))
