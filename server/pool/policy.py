"""What each upstream failure means: for the key, for this request, and for the client.

Two tables. `POLICY` says whether to try again and what happens to the key;
`client_error` (with `_CLIENT`) says what the client is told once no attempt is
left. Changing retry behaviour is a change to a row here, nowhere else.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from ..errors import ApiError
from ..upstream.failures import (
    AbnormalFinish,
    BadResponse,
    DailyQuotaExceeded,
    EmptyReply,
    InvalidKey,
    KeySuspended,
    LocationBlocked,
    ModelNotFound,
    OutputBlocked,
    Overloaded,
    PermissionDenied,
    PromptBlocked,
    QuotaExceeded,
    RequestRejected,
    ServerError,
    SignatureRefused,
    TokenLimitReached,
    Unreachable,
    UpstreamFailure,
    UpstreamTimeout,
)
from .keys import Unavailable


class KeyEffect(Enum):
    NONE = "none"          # the key did nothing wrong
    DISABLE = "disable"    # out of rotation until an owner revives it (persisted)
    COOL = "cool"          # this model, for the RetryInfo delay (per-minute quota)
    EXHAUST = "exhaust"    # this model, until the quota day ends (per-day quota)
    BACK_OFF = "back_off"  # the whole key, briefly, longer with each failure in a row (5xx, timeouts)
    REST = "rest"          # not again within this request only


@dataclass(frozen=True)
class Verdict:
    retry: bool            # another attempt may succeed
    key: KeyEffect
    empty: bool = False    # counts against MAX_EMPTY_RESPONSES as well as MAX_RETRY_NUM
    limit: int = 0         # at most this many of this failure in one request (0: only MAX_RETRY_NUM bounds it)


POLICY: dict[type[UpstreamFailure], Verdict] = {
    InvalidKey:         Verdict(retry=True,  key=KeyEffect.DISABLE),
    KeySuspended:       Verdict(retry=True,  key=KeyEffect.DISABLE),
    PermissionDenied:   Verdict(retry=True,  key=KeyEffect.REST),
    QuotaExceeded:      Verdict(retry=True,  key=KeyEffect.COOL),
    DailyQuotaExceeded: Verdict(retry=True,  key=KeyEffect.EXHAUST),
    Overloaded:         Verdict(retry=True,  key=KeyEffect.BACK_OFF),
    ServerError:        Verdict(retry=True,  key=KeyEffect.BACK_OFF),
    # The same transport failure three times is the network or the upstream, not the key: another key would
    # wait (or fail) the same way, and every attempt counts against a key's quota.
    UpstreamTimeout:    Verdict(retry=True,  key=KeyEffect.BACK_OFF, limit=3),
    Unreachable:        Verdict(retry=True,  key=KeyEffect.NONE, limit=3),
    BadResponse:        Verdict(retry=True,  key=KeyEffect.NONE, limit=3),
    EmptyReply:         Verdict(retry=True,  key=KeyEffect.NONE, empty=True),
    OutputBlocked:      Verdict(retry=True,  key=KeyEffect.NONE, empty=True),
    RequestRejected:    Verdict(retry=False, key=KeyEffect.NONE),
    # a thought signature refused: once more, with Google's placeholder in place of every signature (dispatch)
    SignatureRefused:   Verdict(retry=True,  key=KeyEffect.NONE, limit=2),
    ModelNotFound:      Verdict(retry=False, key=KeyEffect.NONE),
    LocationBlocked:    Verdict(retry=False, key=KeyEffect.NONE),
    PromptBlocked:      Verdict(retry=False, key=KeyEffect.NONE),
    TokenLimitReached:  Verdict(retry=False, key=KeyEffect.NONE),
    AbnormalFinish:     Verdict(retry=False, key=KeyEffect.NONE),  # by finish reason: FINISH_POLICY below
}
_DEFAULT = Verdict(retry=True, key=KeyEffect.NONE)

# A reply that ended abnormally (AbnormalFinish), by its finish reason: is another attempt worth a call?
FINISH_POLICY: dict[str, Verdict] = {
    # a model's function call that did not parse often comes out right the second time
    "MALFORMED_FUNCTION_CALL": Verdict(retry=True,  key=KeyEffect.NONE, limit=2),
    "OTHER":                   Verdict(retry=True,  key=KeyEffect.NONE, limit=2),
    "IMAGE_OTHER":             Verdict(retry=True,  key=KeyEffect.NONE, limit=2),
    # the same request ends the same way: say so at once
    "NO_IMAGE":                Verdict(retry=False, key=KeyEffect.NONE),
    "UNEXPECTED_TOOL_CALL":    Verdict(retry=False, key=KeyEffect.NONE),
    "TOO_MANY_TOOL_CALLS":     Verdict(retry=False, key=KeyEffect.NONE),
}


def verdict(failure: UpstreamFailure) -> Verdict:
    if isinstance(failure, AbnormalFinish):  # a reason Gemini added after this table: its POLICY row
        return FINISH_POLICY.get(failure.reason, POLICY[AbnormalFinish])
    for cls in type(failure).__mro__:
        v = POLICY.get(cls)
        if v is not None:
            return v
    return _DEFAULT


class DispatchError(Exception):
    """No attempt produced an answer. `failures` in the order they happened; `unavailable` says why the
    pool had no (further) key to offer, when that is what ended the request."""

    def __init__(self, failures: list[UpstreamFailure], *, unavailable: Unavailable | None = None, model: str = "",
                 deadline: float = 0.0, attempts: int = 0, upstream: str = "Gemini"):
        super().__init__(unavailable.detail if unavailable and not failures else
                         (str(failures[-1]) if failures else "no attempt was made"))
        self.failures = failures
        self.unavailable = unavailable
        self.model = model
        self.deadline = deadline  # > 0: REQUEST_DEADLINE (seconds) passed before an answer came
        self.attempts = attempts  # upstream calls made (with a deadline: including any cut short by it)
        self.upstream = upstream  # the upstream's name as the user knows it (Gemini, Vertex AI, ollama…)


# status, type, code for a failure that ends a request
_CLIENT: dict[type[UpstreamFailure], tuple[int, str, str]] = {
    RequestRejected:   (400, "invalid_request_error", "upstream_rejected"),
    ModelNotFound:     (404, "invalid_request_error", "model_not_found"),
    PromptBlocked:     (400, "invalid_request_error", "content_filter"),
    OutputBlocked:     (502, "server_error", "content_filter"),
    TokenLimitReached: (400, "invalid_request_error", "max_tokens_too_small"),
    LocationBlocked:   (502, "server_error", "location_not_supported"),
    EmptyReply:        (502, "server_error", "empty_response"),
    Overloaded:        (503, "server_error", "upstream_overloaded"),
    ServerError:       (502, "server_error", "upstream_error"),
    UpstreamTimeout:   (504, "server_error", "upstream_timeout"),
    AbnormalFinish:    (502, "server_error", "abnormal_finish"),
    Unreachable:       (502, "server_error", "upstream_unreachable"),
    BadResponse:       (502, "server_error", "upstream_bad_response"),
    PermissionDenied:  (502, "server_error", "upstream_permission_denied"),
    InvalidKey:        (503, "server_error", "no_usable_key"),
    KeySuspended:      (503, "server_error", "no_usable_key"),
}


def _summary(failures: list[UpstreamFailure]) -> str:
    counts: dict[str, int] = {}
    for f in failures:
        label = f.kind if not isinstance(f, QuotaExceeded) or not f.per else f"QuotaExceeded(per {f.per})"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n}× {k}" for k, n in counts.items())


def _retry_headers(seconds: float, next_day: bool) -> dict[str, str]:
    headers = {"Retry-After": str(max(1, math.ceil(seconds)))}
    if next_day:
        headers["x-should-retry"] = "false"  # the OpenAI SDKs would otherwise retry a quota that is gone for today
    return headers


# Google's own "retry in" names the wait for one key and one call: beside the pool's wait it only contradicts it.
_RETRY_HINT = re.compile(r"\s*Please retry in [0-9.]+\s*s\.?", re.IGNORECASE)


def human_duration(seconds: float) -> str:
    """1 s, 47 s, 3 min 5 s, 16 h 19 min: a wait as a person reads it."""
    s = max(1, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 // 60 else "")


def unavailable_error(u: Unavailable) -> ApiError:
    """No key could be offered at all."""
    if math.isinf(u.retry_at):
        return ApiError(503, f"Keyloom has no usable key: {u.detail}", type="server_error",
                        code="no_usable_key")
    if u.quota:
        return ApiError(429, f"Every key is used up for now: {u.detail}, in {human_duration(u.retry_after)}.",
                        type="rate_limit_error", code="rate_limit_exceeded",
                        headers=_retry_headers(u.retry_after, u.next_day))
    return ApiError(503, f"Every key is resting after upstream errors: {u.detail}", type="server_error",
                    code="keys_resting", headers=_retry_headers(u.retry_after, False))


def exhausted(err: DispatchError) -> bool:
    """Every key is out of quota or resting for the model: what another model (a fallback) can help with."""
    return client_error(err).code in ("rate_limit_exceeded", "keys_resting")


def client_error(err: DispatchError) -> ApiError:
    """The one answer a client gets when its request could not be served."""
    failures, u = err.failures, err.unavailable
    if err.deadline:
        n = err.attempts
        tried = f"; failures before: {_summary(failures)}" if failures else ""
        return ApiError(504, f"No answer within {err.deadline:g}s (REQUEST_DEADLINE), after {n} upstream attempt"
                             f"{'s' if n != 1 else ''}{tried}.", type="server_error", code="deadline_exceeded")
    if not failures:
        return unavailable_error(u) if u is not None else ApiError(
            503, "Keyloom has no usable key", type="server_error", code="no_usable_key")
    last = failures[-1]
    if not verdict(last).retry:
        status, type_, code = _lookup(last)
        if isinstance(last, RequestRejected) and 400 <= last.status < 500:
            status = last.status
        prefix = f"{err.upstream}: " if isinstance(last, (RequestRejected, ModelNotFound)) else ""
        return ApiError(status, prefix + last.message, type=type_, code=code,
                        param="model" if isinstance(last, ModelNotFound) else None)

    alive = [f for f in failures if not isinstance(f, (InvalidKey, KeySuspended))]
    n = len(failures)
    attempts = f"{n} attempt{'s' if n != 1 else ''}"
    if not alive:
        return ApiError(503, f"No usable key: every key tried was rejected ({_summary(failures)}). "
                             f"Last error: {last.message}", type="server_error", code="no_usable_key")
    if all(isinstance(f, QuotaExceeded) for f in alive):
        what = f" for {err.model}" if err.model else ""
        if u is not None and u.quota and not math.isinf(u.retry_at):
            # the pool knows when the first key frees up: say that, not Google's per-call "retry in"
            headers = _retry_headers(u.retry_after, u.next_day)
            return ApiError(429, f"Every key is over its quota{what} ({_summary(failures)} in {attempts}); "
                                 f"{u.detail}, in {human_duration(u.retry_after)}. Google said: "
                                 f"{_RETRY_HINT.sub('', alive[-1].message).strip()}",
                            type="rate_limit_error", code="rate_limit_exceeded", headers=headers)
        delays = [f.retry_after for f in alive if isinstance(f, QuotaExceeded) and f.retry_after]
        seconds = min(delays) if delays else 60.0
        headers = _retry_headers(seconds, all(isinstance(f, DailyQuotaExceeded) for f in alive))
        return ApiError(429, f"Every key tried is over its quota{what} ({_summary(failures)} in {attempts}); "
                             f"retry in {human_duration(seconds)}. Last error: {alive[-1].message}",
                        type="rate_limit_error", code="rate_limit_exceeded", headers=headers)
    primary = next((f for f in reversed(alive) if not isinstance(f, QuotaExceeded) and not verdict(f).empty), None)
    if primary is None:
        primary = next((f for f in reversed(alive) if verdict(f).empty), alive[-1])
    status, type_, code = _lookup(primary)
    return ApiError(status, f"{err.upstream} failed after {attempts} ({_summary(failures)}). Last error: "
                            f"{primary.message}",
                    type=type_, code=code)


def _lookup(failure: UpstreamFailure) -> tuple[int, str, str]:
    for cls in type(failure).__mro__:
        row = _CLIENT.get(cls)
        if row is not None:
            return row
    return 502, "server_error", "upstream_error"
