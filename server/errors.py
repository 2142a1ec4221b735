"""Client-facing errors in the OpenAI error shape.

`ApiError` is a value, not tied to Tornado: services raise it, handlers write it
(as a JSON body with its status, or as one `data: {"error": …}` event once a
stream has begun).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r}, code={self.code!r})"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found", param="model")


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "Incorrect API key provided. Use the Keyloom PASSWORD as your API key "
        "(Authorization: Bearer <PASSWORD>).",
        code="invalid_api_key",
        headers={"WWW-Authenticate": 'Bearer realm="keyloom"'},
    )


def too_many_attempts(wait: int) -> ApiError:
    return ApiError(429, f"Too many wrong passwords or keys from this address; try again in {wait}s.",
                    type="rate_limit_error", code="too_many_attempts", headers={"Retry-After": str(wait)})


def too_many_connections() -> ApiError:
    return ApiError(429, "Too many requests in progress from this address (MAX_CONNECTIONS_PER_CLIENT); wait for "
                         "some to finish.", type="rate_limit_error", code="too_many_connections",
                    headers={"Retry-After": "1"})


def storage_error(exc: sqlite3.Error, data_dir: Path) -> ApiError:
    """What a page or API call is told when the database refused to store something."""
    text = str(exc).lower()
    if "full" in text:
        return ApiError(507, f"Keyloom could not save this: the disk that holds DATA_DIR ({data_dir}) is full. "
                             "Free some space; requests to the API are still served.", type="server_error",
                        code="storage_full")
    return ApiError(503, f"Keyloom could not use its database in DATA_DIR ({data_dir}) just now ({exc}); try "
                         "again shortly.", type="server_error", code="storage_unavailable",
                    headers={"Retry-After": "5"})


def encodable(text: str) -> bool:
    """Text every store can keep: JSON allows lone UTF-16 surrogates ("\\ud800"), UTF-8 (SQLite, Redis) does not.
    One rule for both stores, so what one refuses the other refuses too."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
