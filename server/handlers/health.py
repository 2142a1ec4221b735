"""GET /health: is the process up, and counts only (no keys, no model names, no settings); plus which replica
and worker answered, and which store (sqlite or redis) it uses."""
from __future__ import annotations

import asyncio

from .. import __version__
from ..store.redis_backend import replica_name
from .base import BaseHandler


class HealthHandler(BaseHandler):
    def get(self) -> None:
        kl = self.kl
        self.set_header("Cache-Control", "no-store")
        self.write_json({
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(kl.clock.monotonic() - kl.started_mono, 1),
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
            "demo": kl.demo,
            # which process answered: behind a load balancer or with WORKERS>1, each answer can be another's
            "replica": replica_name(kl.settings.REPLICA_NAME),
            "worker": kl.worker,
            "keys": kl.pool.counts(),
            "models": len(kl.router.chat_models()),
            "in_flight": max(0, kl.in_flight - 1),
            "open_streams": len(kl.keepalive),
            "refused_connections": kl.server.refused_connections if kl.server is not None else 0,
            "upstream": {"requests_sent": kl.http.requests_sent, "connections_opened": kl.http.connections_opened,
                         "idle_connections": kl.http.idle_connections()},
            "store": {"flushes": kl.flusher.flushes, "failed_flushes": kl.flusher.failed_flushes,
                      "prunes": kl.flusher.prunes,
                      "pending_log_rows": len(kl.request_log),
                      "kind": kl.stores.kind},
        })

    head = get
