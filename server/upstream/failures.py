"""What went wrong upstream, as typed values, decided in one place.

`classify_error` reads a Gemini/Vertex error response (google.rpc.Status, maybe
wrapped in a list) and `classify_reply` reads a 200 reply that is still no answer
(a blocked prompt, an empty candidate). Everything else in Keyloom matches on
these types; `pool/policy.py` says what each one does to the key and the request.
Messages are passed through the redactor: Google quotes keys in some of them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ujson

from ..redact import snippet
from ..translate.gemini_facts import abnormal_message, finish_kind, has_answer, is_signature_refusal


@dataclass(eq=False)
class UpstreamFailure(Exception):
    """Base of every upstream failure. `message` is safe to show (keys masked)."""

    message: str = ""
    status: int = 0  # upstream HTTP status, 0 when there was no HTTP answer

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)
        # the error object Google sent, masked, for the routes that pass Gemini's own answers on (None: none)
        self.google_error: dict[str, Any] | None = None
        # the Google Cloud project number the error names ("" when none): keys of one project share its quota
        self.project: str = ""

    def __str__(self) -> str:
        return self.message

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(eq=False)
class InvalidKey(UpstreamFailure):
    """API_KEY_INVALID: the key does not exist (Google answers 400)."""


@dataclass(eq=False)
class KeySuspended(UpstreamFailure):
    """403 for this key for good: suspended consumer, key reported as leaked, API disabled or blocked."""

    reason: str = ""


@dataclass(eq=False)
class PermissionDenied(UpstreamFailure):
    """Another 403: may be specific to this key, so another key is tried."""

    reason: str = ""


@dataclass(frozen=True)
class QuotaViolation:
    """One entry of Google's QuotaFailure.violations: which quota ran out and, when Google says, its value
    (the limit itself, e.g. 20 requests per day): what pool/learned.py learns limits from."""

    quota_id: str
    value: int | None = None
    model: str = ""


@dataclass(eq=False)
class QuotaExceeded(UpstreamFailure):
    """429 RESOURCE_EXHAUSTED. `per` is "minute", "day" or None when Google did not say."""

    per: str | None = None
    retry_after: float | None = None
    quota_id: str = ""
    violations: tuple[QuotaViolation, ...] = ()


@dataclass(eq=False)
class DailyQuotaExceeded(QuotaExceeded):
    """A per-day quota (quotaId …PerDay…): waiting a minute will not help; the key is done for this model today."""


@dataclass(eq=False)
class Overloaded(UpstreamFailure):
    """503 UNAVAILABLE: the model is overloaded; transient."""


@dataclass(eq=False)
class ServerError(UpstreamFailure):
    """500, 504 and other 5xx: transient."""


@dataclass(eq=False)
class UpstreamTimeout(UpstreamFailure):
    """No (complete) answer within the configured time."""


@dataclass(eq=False)
class Unreachable(UpstreamFailure):
    """The connection could not be made, or broke before an answer."""

    reached: bool = True  # False: the request never left (connect failed), so it does not count against the key


@dataclass(eq=False)
class BadResponse(UpstreamFailure):
    """A 2xx that is not a readable Gemini reply (malformed JSON, truncated stream)."""


@dataclass(eq=False)
class RequestRejected(UpstreamFailure):
    """4xx caused by the request itself: sending it again with another key would fail the same way."""

    google_status: str = ""


@dataclass(eq=False)
class SignatureRefused(RequestRejected):
    """400: Gemini refused a thought signature in the history (issued to another key, or corrupted). Sent again
    with the signatures replaced by Google's placeholder, the request can succeed (pool/policy.py)."""


@dataclass(eq=False)
class ModelNotFound(UpstreamFailure):
    """404 NOT_FOUND for the model."""


@dataclass(eq=False)
class LocationBlocked(UpstreamFailure):
    """FAILED_PRECONDITION "User location is not supported": this server's egress is refused."""


@dataclass(eq=False)
class PromptBlocked(UpstreamFailure):
    """The prompt was refused (`promptFeedback.blockReason`): deterministic, never retried."""

    reason: str = ""


@dataclass(eq=False)
class OutputBlocked(UpstreamFailure):
    """The reply was filtered before any content (finishReason SAFETY, RECITATION, …)."""

    reason: str = ""


@dataclass(eq=False)
class TokenLimitReached(UpstreamFailure):
    """A 200 cut at maxOutputTokens before any visible text (thinking used it all): the same
    request would end the same way, so it is not retried."""


@dataclass(eq=False)
class AbnormalFinish(UpstreamFailure):
    """A 200 whose finishReason says the reply went wrong (MALFORMED_FUNCTION_CALL, NO_IMAGE, …; see
    translate/gemini_facts.py). Whether another attempt is worth it depends on the reason: pool/policy.py."""

    reason: str = ""


@dataclass(eq=False)
class EmptyReply(UpstreamFailure):
    """A 200 with no text and no function call (only thoughts, or an empty candidate)."""

    finish_reason: str = ""


# How Google names the project behind a key: "consumer 'project_number:123…'", ErrorInfo's
# metadata.consumer "projects/123…", "has not been used in project 123…", console links "?project=123…".
_PROJECT = re.compile(r"(?:project_number:|projects/|\bproject[= ])([0-9]{5,20})\b", re.IGNORECASE)


def project_number(texts: list[str]) -> str:
    """The first Google Cloud project number named in these texts, "" when none (0…0 is no project)."""
    for text in texts:
        for m in _PROJECT.finditer(text):
            if m.group(1).strip("0"):
                return m.group(1)
    return ""


def _strings(value: Any, out: list[str], depth: int = 0) -> list[str]:
    """Every string inside a JSON value (bounded depth): where a project number may be written."""
    if isinstance(value, str):
        out.append(value)
    elif depth < 6 and isinstance(value, dict):
        for v in value.values():
            _strings(v, out, depth + 1)
    elif depth < 6 and isinstance(value, list):
        for v in value[:20]:
            _strings(v, out, depth + 1)
    return out


def _quota_value(value: Any) -> int | None:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)s\s*$")
_RETRY_IN = re.compile(r"retry in ([0-9]+(?:\.[0-9]+)?)\s*s", re.IGNORECASE)


def _parse_duration(text: Any) -> float | None:
    if isinstance(text, (int, float)):
        return float(text)
    if isinstance(text, str):
        m = _DURATION.match(text)
        if m:
            return float(m.group(1))
    return None


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        data = ujson.loads(body) if body else None
    except (ValueError, TypeError):
        return {}
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data["error"]
    return {}


def classify_error(status: int, body: bytes, redact: Callable[[str], str] = lambda s: s) -> UpstreamFailure:
    """Turn a non-2xx upstream answer (or an error object inside a stream) into a typed failure, carrying the
    error object as Google sent it, masked."""
    failure = _classify_error(status, body, redact)
    err = _error_object(body)
    if err:
        failure.project = project_number(_strings(err, []))
        try:
            failure.google_error = ujson.loads(redact(ujson.dumps(err, ensure_ascii=False)))
        except (ValueError, TypeError):
            failure.google_error = None
    return failure


def _classify_error(status: int, body: bytes, redact: Callable[[str], str] = lambda s: s) -> UpstreamFailure:
    """Turn a non-2xx upstream answer into a typed failure.

    A body that is not a Google error is quoted in part, masked before it is cut: cut first, the
    head of a key it quotes would be too short for the key pattern to recognise."""
    err = _error_object(body)
    google_status = str(err.get("status") or "")
    raw_message = err.get("message")
    if not isinstance(raw_message, str) or not raw_message:
        quoted = snippet(body, redact, 200) if body and not err else ""
        raw_message = f"upstream answered HTTP {status}" + (f": {quoted}" if quoted else "")
    message = redact(raw_message)
    found = err.get("details")
    details: list[Any] = found if isinstance(found, list) else []
    reasons: set[str] = set()
    quota_ids: list[str] = []
    violations: list[QuotaViolation] = []
    retry_after: float | None = None
    for d in details:
        if not isinstance(d, dict):
            continue
        if isinstance(d.get("reason"), str):
            reasons.add(d["reason"])
        t = str(d.get("@type", ""))
        if t.endswith("QuotaFailure"):
            for v in d.get("violations") or []:
                if isinstance(v, dict) and isinstance(v.get("quotaId"), str):
                    quota_ids.append(v["quotaId"])
                    dims = v.get("quotaDimensions")
                    model = dims.get("model") if isinstance(dims, dict) else None
                    violations.append(QuotaViolation(v["quotaId"], _quota_value(v.get("quotaValue")),
                                                     model if isinstance(model, str) else ""))
        elif t.endswith("RetryInfo"):
            retry_after = _parse_duration(d.get("retryDelay"))
    lower = raw_message.lower()

    if "API_KEY_INVALID" in reasons or (status in (400, 401) and "api key not valid" in lower) \
            or "api key not found" in lower or "api key expired" in lower:
        return InvalidKey(message, status)
    if status == 429 or google_status == "RESOURCE_EXHAUSTED":
        per = None
        if any("PerDay" in q for q in quota_ids):
            per = "day"
        elif any("PerMinute" in q for q in quota_ids):
            per = "minute"
        if retry_after is None:
            m = _RETRY_IN.search(raw_message)
            if m:
                retry_after = float(m.group(1))
        kind = DailyQuotaExceeded if per == "day" else QuotaExceeded
        return kind(message, status, per=per, retry_after=retry_after, quota_id=quota_ids[0] if quota_ids else "",
                    violations=tuple(violations))
    if status == 403 or google_status == "PERMISSION_DENIED":
        permanent = {"CONSUMER_SUSPENDED", "SERVICE_DISABLED", "API_KEY_SERVICE_BLOCKED"}
        reason = next(iter(reasons & permanent), "")
        if not reason and "suspended" in lower:
            reason = "CONSUMER_SUSPENDED"
        if not reason and "leaked" in lower:
            reason = "KEY_LEAKED"
        if reason:
            return KeySuspended(message, status, reason=reason)
        return PermissionDenied(message, status, reason=next(iter(reasons), ""))
    if status == 401:
        return InvalidKey(message, status)
    if google_status == "FAILED_PRECONDITION" and "location" in lower:
        return LocationBlocked(message, status)
    if status == 404:
        return ModelNotFound(message, status)
    if status == 503:
        return Overloaded(message, status)
    if status == 504 or google_status == "DEADLINE_EXCEEDED":
        return UpstreamTimeout(message, status)
    if status >= 500:
        return ServerError(message, status)
    if status == 408:
        return UpstreamTimeout(message, status)
    if is_signature_refusal(status, raw_message):
        return SignatureRefused(message, status, google_status=google_status or "INVALID_ARGUMENT")
    if 400 <= status < 500:
        return RequestRejected(message, status, google_status=google_status or "INVALID_ARGUMENT")
    return BadResponse(message, status)


def classify_reply(reply: Any) -> UpstreamFailure | None:
    """None when a 200 reply holds an answer; otherwise why it does not."""
    if not isinstance(reply, dict):
        return BadResponse("upstream reply is not a JSON object", 200)
    feedback = reply.get("promptFeedback")
    candidates = reply.get("candidates")
    if isinstance(feedback, dict) and feedback.get("blockReason") and not candidates:
        reason = str(feedback["blockReason"])
        extra = feedback.get("blockReasonMessage")
        msg = f"Gemini blocked the prompt (blockReason: {reason})" + (f": {extra}" if isinstance(extra, str) else "")
        return PromptBlocked(msg, 200, reason=reason)
    if not isinstance(candidates, list) or not candidates:
        return EmptyReply("Gemini returned no candidates", 200)
    return classify_candidates([c for c in candidates if isinstance(c, dict)])


def classify_candidates(candidates: list[dict[str, Any]]) -> UpstreamFailure | None:
    """None when the candidates hold an answer that ended normally (or was cut by a filter after some of it);
    otherwise why not. A candidate that ended abnormally fails the reply even with content: its turn is broken
    (a malformed call, a missing image), and a client must not take it for a finished answer."""
    finish = ""
    answered = False
    for c in candidates:
        reason = str(c.get("finishReason") or "")
        if finish_kind(reason) == "abnormal":
            return AbnormalFinish(abnormal_message(reason, c.get("finishMessage")), 200, reason=reason)
        answered = answered or has_answer(c)
        finish = finish or reason
    if answered:
        return None
    kind = finish_kind(finish)
    if kind == "filtered":
        return OutputBlocked(f"Gemini filtered the reply before any content (finishReason: {finish})",
                             200, reason=finish)
    if kind == "length":
        return TokenLimitReached("Gemini spent the whole token limit before writing any text (finishReason: "
                                 "MAX_TOKENS); raise max_tokens or lower reasoning_effort", 200)
    return EmptyReply(f"Gemini returned an empty reply (finishReason: {finish or 'none'})", 200, finish_reason=finish)
