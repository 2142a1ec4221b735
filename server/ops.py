"""Where the key pool and the dispatcher report to operations: GET /metrics counts and the alert webhook.

The pool and the dispatcher know nothing of either: each has one hook (`KeyPool.on_event`,
`Dispatcher.observer`) that the app points here. This is the only place that decides which of their events
is worth an alert, and what it says.
"""
from __future__ import annotations

import math

from .alerts import Alerts
from .metrics import RequestMetrics
from .pool.keys import Key, KeyPool, Unavailable


class OpsObserver:
    def __init__(self, pool: KeyPool, metrics: RequestMetrics, alerts: Alerts):
        self.pool = pool
        self.metrics = metrics
        self.alerts = alerts

    # -- the dispatcher (dispatch.Observer) -------------------------------------------------------

    def attempt(self, key: Key, model: str, result: str) -> None:
        if self.metrics.enabled:
            self.metrics.attempt(key.fp, key.provider, model, result)

    def unavailable(self, provider: str, model: str, u: Unavailable) -> None:
        """A request found no key: alert when it is because none is usable at all, or because the model's daily
        quota is gone on every key (the first frees up only with the next quota day)."""
        if math.isinf(u.retry_at):  # also when this request only avoided the rest: check the pool itself
            if not any(k.usable for k in self.pool.keys if k.provider == provider):
                self.no_usable_key(provider, u.detail)
        elif u.quota and u.next_day:
            self.alerts.emit("quota_exhausted", f"{provider}:{model}",
                             f"Keyloom: {model} ({provider}) is out of quota on every key for today. {u.detail}.",
                             model=model, provider=provider)

    # -- the pool (KeyPool.on_event) -----------------------------------------------------------------

    def pool_event(self, event: str, key: Key, reason: str) -> None:
        if event != "key_disabled":
            return
        self.alerts.emit("key_disabled", key.fp, f"Keyloom took key {key.masked} (fingerprint {key.fp}, "
                         f"{key.provider}) out of rotation: {reason}", key=key)
        same = [k for k in self.pool.keys if k.provider == key.provider]
        if same and not any(k.usable for k in same):
            self.no_usable_key(key.provider, f"all {len(same)} keys are disabled")

    def no_usable_key(self, provider: str, detail: str) -> None:
        self.alerts.emit("no_usable_key", provider, f"Keyloom has no usable key for {provider}: {detail}. "
                         "Requests to it fail until a key is added or enabled.", provider=provider)
