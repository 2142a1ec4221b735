"""The model list: read from Gemini with a pooled key (all pages), cached, refreshed in the background.

Only chat-capable models (`supportedGenerationMethods` has `generateContent`) are
listed for chat. A new Google model therefore appears within one refresh interval,
without a restart. Until the first listing succeeds, a short built-in list keeps
clients' model pickers usable.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from .clock import Clock
from .dispatch import Dispatcher
from .pool.policy import DispatchError
from .settings import Settings
from .translate.traits import ModelTraits, traits_for

log = logging.getLogger("keyloom.models")

FALLBACK_MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash")
RETRY_FAILED_LISTING_AFTER = 30.0
REFRESH_ON_MISS_AFTER = 60.0  # an unknown model id refreshes the list, at most this often


def model_id(name: str) -> str:
    return name[len("models/"):] if name.startswith("models/") else name


class ModelCatalog:
    def __init__(self, dispatcher: Dispatcher, settings: Callable[[], Settings], clock: Clock):
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        self._chat: dict[str, dict[str, Any]] = {}
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
            chat = {}
            now = int(self.clock.time())
            for m in models:
                name = m.get("name")
                methods = m.get("supportedGenerationMethods") or ()
                if isinstance(name, str) and "generateContent" in methods:
                    mid = model_id(name)
                    chat[mid] = m
                    self._first_seen.setdefault(mid, now)
            self._chat = chat
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
        if self.loaded_at is not None or not self.dispatcher.pool.keys:
            return
        if self.failed_at is not None and self.clock.monotonic() - self.failed_at < RETRY_FAILED_LISTING_AFTER:
            return
        await self.refresh()

    def chat_models(self) -> list[str]:
        s = self.settings()
        blocked = set(s.BLOCKED_MODELS)
        if self.loaded_at is None:
            ids = list(FALLBACK_MODELS) if self.dispatcher.pool.keys else []
        else:
            ids = sorted(self._chat)
        ids += [m for m in s.EXTRA_MODELS if m not in ids]
        return [m for m in ids if m not in blocked]

    def created(self, mid: str) -> int:
        return self._first_seen.get(mid) or int(self.clock.time())

    def is_blocked(self, mid: str) -> bool:
        return mid in self.settings().BLOCKED_MODELS

    async def knows(self, mid: str) -> bool:
        """May a request for `mid` go upstream? Listed models and EXTRA_MODELS do. An unknown id is refused
        here rather than spending a key on Google's 404 (and costing state per key); a new Google model is
        caught by refreshing the list on a miss, at most once a minute. Before any listing succeeded there
        is nothing to judge by, so everything goes."""
        if mid in self._chat or mid in self.settings().EXTRA_MODELS or self.loaded_at is None:
            return True
        now = self.clock.monotonic()
        if self._miss_refresh is None or now - self._miss_refresh >= REFRESH_ON_MISS_AFTER:
            self._miss_refresh = now
            await self.refresh()
        return mid in self._chat

    def traits(self, mid: str) -> ModelTraits:
        t = self._traits.get(mid)
        if t is None:
            if len(self._traits) > 1024:  # ids come from clients: keep the cache bounded
                self._traits.clear()
            t = self._traits[mid] = traits_for(mid, self._chat.get(mid))
        return t
