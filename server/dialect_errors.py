"""Keyloom's errors as the Responses and Messages APIs say them, chosen by what each client then does.

An `ApiError` is decided once (server/pool/policy.py) in OpenAI's terms. Coding agents retry on their own
and read the status and code to decide whether to wait or stop, so the same failure must be said differently
per door (recorded with the real clients; see the tables in README "Coding agents"):

- Codex CLI stops at once on 429 `insufficient_quota` (right for "every key is out for today"), waits on
  429 `rate_limit_exceeded` for the delay it parses from "try again in N s", and sends a persistent 500
  thirty times, so a failure that waiting cannot cure must not be a 5xx.
- Claude Code retries 401 and 529 with back-off for minutes, honours 429's `retry-after`, and gives up after
  a few quick tries on a 400 whose message says why. So a condition that persists (wrong password, no usable
  key, a quota gone until tomorrow) is a 400 with a clear message there; 529 `overloaded_error` only for what
  passes (Gemini overloaded or failing for a moment).
"""
from __future__ import annotations

from typing import Any

from .errors import ApiError
from .translate.gemini_to_anthropic import error_body

# Failures that waiting does not cure: the owner (or tomorrow) has to act.
PERSISTENT_CODES = frozenset({"no_usable_key", "invalid_api_key", "too_many_attempts", "client_not_allowed",
                              "client_key_disabled", "client_key_expired"})
SHORT_WAIT = 60  # seconds: a Retry-After up to this is worth waiting for in an agent's loop


def _retry_after(err: ApiError) -> int | None:
    try:
        return int(err.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _gone_for_today(err: ApiError) -> bool:
    return err.status == 429 and err.headers.get("x-should-retry") == "false"


def as_responses(err: ApiError) -> ApiError:
    """The error for /v1/responses: OpenAI's shape, with Codex's reading of status and code in mind."""
    if _gone_for_today(err):
        return ApiError(429, err.message, type="insufficient_quota", code="insufficient_quota",
                        headers=err.headers, param=err.param)
    if err.status == 429 and err.code == "rate_limit_exceeded":
        wait = _retry_after(err)
        if wait is not None and "try again in" not in err.message.lower():
            return ApiError(429, f"{err.message} Please try again in {wait}s.", type=err.type, code=err.code,
                            headers=err.headers, param=err.param)
    if err.status >= 500 and err.code in PERSISTENT_CODES:
        return ApiError(400, err.message, type="invalid_request_error", code=err.code, headers={}, param=err.param)
    return err


# Anthropic's error types by the status they come with (its errors page; the SDK's ErrorType union).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    504: "timeout_error", 529: "overloaded_error"}


def as_messages(err: ApiError) -> tuple[int, dict[str, Any]]:
    """(status, body) for /v1/messages, in Anthropic's shape: {"type": "error", "error": {"type", "message"}}."""
    status = err.status
    message = err.message
    wait = _retry_after(err)
    if err.code == "invalid_api_key":
        status, message = 400, ("Wrong or missing password: set ANTHROPIC_API_KEY (sent as x-api-key) or "
                                "ANTHROPIC_AUTH_TOKEN (sent as Authorization: Bearer) to Keyloom's PASSWORD.")
    elif err.code in PERSISTENT_CODES or _gone_for_today(err) or (status == 429 and (wait or 0) > SHORT_WAIT):
        status = 400  # waiting in the agent's loop would not help: say why and let it stop
    elif status in (502, 503):
        status = 529  # passes: Gemini overloaded or failing for a moment
    elif status == 504:
        pass
    elif status >= 500:
        status = 500
    elif status not in _ANTHROPIC_TYPES:
        status = 400 if status < 500 else 500
    return status, error_body(_ANTHROPIC_TYPES[status], message)
