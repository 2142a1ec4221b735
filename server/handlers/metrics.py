"""GET /metrics for Prometheus (server/metrics.py builds the families).

Opened by the admin password as a Bearer token, through the same throttled check as the admin API (a
wrong guess here counts against the same per-client budget as one at the dashboard's sign-in), or without
a password for a scraper whose address is in METRICS_ALLOW. The client password never opens it: the
series name keys (by fingerprint), models and clients, which are the owner's business.
"""
from __future__ import annotations

from ..errors import ApiError
from .base import BaseHandler


def metrics_unauthorized() -> ApiError:
    return ApiError(401, "GET /metrics needs the admin password (Authorization: Bearer <ADMIN_PASSWORD>), or the "
                         "scraper's address in METRICS_ALLOW.", code="unauthorized",
                    headers={"WWW-Authenticate": 'Bearer realm="keyloom-metrics"'})


class MetricsHandler(BaseHandler):
    def set_default_headers(self) -> None:  # no CORS: a scraper is not a browser page
        pass

    def refusal(self) -> ApiError | None:
        kl = self.kl
        if not kl.settings.METRICS:
            return ApiError(404, "Metrics are off (METRICS=false).", code="not_found")
        if kl.metrics_allow.allows(self.client_ip):
            return None
        auth = self.request.headers.get("Authorization")
        if not auth:
            return metrics_unauthorized()
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            return metrics_unauthorized()
        try:
            kl.admin.check_password(self.client_ip, token.strip())  # 429 when throttled, 401 when wrong (counted)
        except ApiError as e:
            return e
        return None

    def get(self) -> None:
        body, content_type = self.kl.metrics_registry.render(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)
