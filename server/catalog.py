"""The model list: read from Gemini with a pooled key (all pages), cached, refreshed in the background.

Chat-capable models (`supportedGenerationMethods` has `generateContent`) are listed
for chat, embedding models (`embedContent`) only when asked for. A new Google model
appears within one refresh interval, without a restart. Until the first listing
succeeds, a short built-in list keeps clients' model pickers usable.

Model ids may carry hajimi's suffixes: `-search` (Google Search grounding; listed as a
twin of each Gemini 2.x+ model when SEARCH_MODE is on), `-nothinking` and `-max`
(thinking off / at its maximum; accepted, not listed). `resolve` takes them apart.
WHITELIST_MODELS, BLOCKED_MODELS and EXTRA_MODELS decide what is listed and served.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .dispatch import Dispatcher
from .pool.policy import DispatchError
from .settings import Settings
from .translate.gemini_facts import is_chat_model
from .translate.traits import ModelTraits, traits_for

log = logging.getLogger("keyloom.models")

FALLBACK_MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash")
RETRY_FAILED_LISTING_AFTER = 30.0
REFRESH_ON_MISS_AFTER = 60.0  # an unknown model id refreshes the list, at most this often
SEARCH_SUFFIX = "-search"
THINKING_SUFFIXES = {"-nothinking": "none", "-max": "max"}
FALLBACK_EMBEDDING_MODELS = ("gemini-embedding-001", "text-embedding-004")


@dataclass(frozen=True)
class Variant:
    """A requested model id taken apart: the upstream model and what the suffixes ask for."""

    base: str
    search: bool = False
    thinking: str | None = None  # "none" or "max" from the suffix; None: as the request says


def split_variant(mid: str) -> Variant:
    base, search, thinking = mid, False, None
    if base.endswith(SEARCH_SUFFIX) and len(base) > len(SEARCH_SUFFIX):
        base, search = base[:-len(SEARCH_SUFFIX)], True
    for suffix, mode in THINKING_SUFFIXES.items():
        if base.endswith(suffix) and len(base) > len(suffix):
            base, thinking = base[:-len(suffix)], mode
            break
    return Variant(base, search, thinking)


def searchable(mid: str) -> bool:
    """Gemini 2.x and later chat models take the googleSearch tool."""
    m = mid.lower()
    return m.startswith(("gemini-2", "gemini-3")) and is_chat_model(m)


def model_id(name: str) -> str:
    return name[len("models/"):] if name.startswith("models/") else name


# What a model id may look like, on every route: bounded, so a client cannot make Keyloom store or echo
# kilobytes of "model" (":" and "/" occur in ids of other providers, such as llama3.1:8b or vertex/…).
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-:/]{0,127}$")


def valid_model_id(mid: str) -> bool:
    return MODEL_ID.match(mid) is not None


class ModelCatalog:
    def __init__(self, dispatcher: Dispatcher, settings: Callable[[], Settings], clock: Clock):
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        self._chat: dict[str, dict[str, Any]] = {}
        self._embed: dict[str, dict[str, Any]] = {}
        self._predict: dict[str, dict[str, Any]] = {}
        self._first_seen: dict[str, int] = {}
        self._traits: dict[str, ModelTraits] = {}
        self.loaded_at: float | None = None
        self.failed_at: float | None = None
        self.last_error: str | None = None
        self._refreshing: asyncio.Future[bool] | None = None
        self._miss_refresh: float | None = None  # monotonic time of the last refresh caused by an unknown id

    async def refresh(self) -> bool:
        """Fetch the list now (concurrent callers share one fetch). False when it failed."""
        if self._refreshing is not None:
            return await asyncio.shield(self._refreshing)
        self._refreshing = asyncio.get_running_loop().create_future()
        ok = False
        try:
            models = await self.dispatcher.list_models()
            chat, embed, predict = {}, {}, {}
            now = int(self.clock.time())
            for m in models:
                name = m.get("name")
                methods = m.get("supportedGenerationMethods") or ()
                if not isinstance(name, str):
                    continue
                mid = model_id(name)
                if "generateContent" in methods:
                    chat[mid] = m
                elif "embedContent" in methods or "batchEmbedContents" in methods:
                    embed[mid] = m
                elif "predict" in methods:
                    predict[mid] = m  # Imagen (and other :predict models): images only, never chat
                else:
                    continue
                self._first_seen.setdefault(mid, now)
            self._chat, self._embed, self._predict = chat, embed, predict
            self._traits.clear()
            self.loaded_at = self.clock.time()
            self.last_error = None
            ok = True
            log.info("model list refreshed: %d chat models", len(chat))
        except DispatchError as e:
            self.failed_at = self.clock.monotonic()
            self.last_error = str(e)
            log.warning("could not refresh the model list: %s", e)
        except Exception:  # never let a background refresh take the process down
            self.failed_at = self.clock.monotonic()
            self.last_error = "unexpected error"
            log.exception("model list refresh failed")
        finally:
            fut, self._refreshing = self._refreshing, None
            fut.set_result(ok)
        return ok

    async def ensure_loaded(self) -> None:
        if self.loaded_at is not None or not self.dispatcher.pool.has("gemini"):
            return
        if self.failed_at is not None and self.clock.monotonic() - self.failed_at < RETRY_FAILED_LISTING_AFTER:
            return
        await self.refresh()

    def allowed(self, mid: str, base: str | None = None) -> bool:
        """WHITELIST_MODELS (when set) and BLOCKED_MODELS, applied to the id and to its base model."""
        s = self.settings()
        base = split_variant(mid).base if base is None else base
        if mid in s.BLOCKED_MODELS or base in s.BLOCKED_MODELS:
            return False
        return not s.WHITELIST_MODELS or mid in s.WHITELIST_MODELS or base in s.WHITELIST_MODELS

    def chat_models(self, all_models: bool = False) -> list[str]:
        """The chat model ids to list (all_models: before WHITELIST/BLOCKED, to find ids already taken)."""
        s = self.settings()
        if self.loaded_at is None:
            ids = list(FALLBACK_MODELS) if self.dispatcher.pool.has("gemini") else []
        else:
            ids = sorted(self._chat)
        ids += [m for m in s.EXTRA_MODELS if m not in ids]
        if s.SEARCH_MODE:
            ids += [m + SEARCH_SUFFIX for m in ids if searchable(m)]
        return ids if all_models else [m for m in ids if self.allowed(m)]

    def embedding_models(self) -> list[str]:
        if self.loaded_at is None:
            ids = list(FALLBACK_EMBEDDING_MODELS) if self.dispatcher.pool.has("gemini") else []
        else:
            ids = sorted(self._embed)
        return [m for m in ids if self.allowed(m)]

    def created(self, mid: str) -> int:
        return self._first_seen.get(split_variant(mid).base) or int(self.clock.time())

    def listed(self, mid: str) -> bool:
        return mid in self.chat_models() or mid in self.embedding_models()

    def _table(self, kind: str) -> dict[str, dict[str, Any]]:
        return {"chat": self._chat, "embed": self._embed, "predict": self._predict}[kind]

    async def _known(self, base: str, kind: str) -> bool:
        if base in self._table(kind) or base in self.settings().EXTRA_MODELS or self.loaded_at is None:
            return True
        now = self.clock.monotonic()
        if self._miss_refresh is None or now - self._miss_refresh >= REFRESH_ON_MISS_AFTER:
            self._miss_refresh = now
            await self.refresh()
        return base in self._table(kind)

    async def knows(self, mid: str, variant: Variant | None = None) -> bool:
        """May a chat request for `mid` go upstream? Listed models and EXTRA_MODELS do (with their suffixes;
        -search only with SEARCH_MODE). An unknown id is refused here rather than spending a key on Google's
        404; a new Google model is caught by refreshing the list on a miss, at most once a minute. Before any
        listing succeeded there is nothing to judge by, so everything goes."""
        v = split_variant(mid) if variant is None else variant
        if not self.allowed(mid, v.base) or (v.search and not (self.settings().SEARCH_MODE and searchable(v.base))):
            return False
        return await self._known(v.base, "chat")

    async def knows_embedding(self, mid: str) -> bool:
        return self.allowed(mid) and await self._known(mid, "embed")

    async def knows_predict(self, mid: str) -> bool:
        """An Imagen model (`:predict`), for /v1/images/generations."""
        return self.allowed(mid) and await self._known(mid, "predict")

    def entry(self, mid: str) -> dict[str, Any] | None:
        """The model's ListModels entry as Google gave it (None for fallback and EXTRA_MODELS ids)."""
        return self._chat.get(mid) or self._embed.get(mid)

    def traits(self, mid: str) -> ModelTraits:
        t = self._traits.get(mid)
        if t is None:
            if len(self._traits) > 1024:  # ids come from clients: keep the cache bounded
                self._traits.clear()
            t = self._traits[mid] = traits_for(mid, self._chat.get(mid))
        return t
