"""The page at / (until the dashboard arrives): says Keyloom is up and how to connect. No data."""
from __future__ import annotations

from ..openapi import document
from ..translate.sse import json_bytes
from .base import BaseHandler


class IndexHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; "
                                                   "script-src 'unsafe-inline'; frame-ancestors 'self' "
                                                   "https://huggingface.co https://*.hf.space")
        self.finish(self.kl.static_file("index.html"))

    head = get


class OpenApiHandler(BaseHandler):
    """GET /openapi.json: the API's own description (no secrets in it, so no authentication)."""

    _body: bytes | None = None

    def get(self) -> None:
        if OpenApiHandler._body is None:
            OpenApiHandler._body = json_bytes(document())
        self.set_header("Content-Type", "application/json")
        self.finish(OpenApiHandler._body)
