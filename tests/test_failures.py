"""Upstream failures are read from Google's error bodies (google.rpc.Status with ErrorInfo, QuotaFailure and RetryInfo
details: https://ai.google.dev/gemini-api/docs/troubleshooting), not guessed; the policy tables say what each does."""
from __future__ import annotations

import json
import math

import pytest

from server.pool.keys import Unavailable
from server.pool.policy import POLICY, DispatchError, KeyEffect, client_error, unavailable_error, verdict
from server.redact import Redactor
from server.upstream import failures as F
from tests.fake_gemini import (
    bad_request_body,
    error_body,
    internal_body,
    invalid_key_body,
    leaked_body,
    not_found_body,
    overloaded_body,
    quota_body,
    suspended_body,
    text_reply,
)

KEY = "AIzaSyFakeKey0001abcdefghijklmnopqrstu"


def classify(status, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return F.classify_error(status, raw, Redactor([KEY]))


def test_invalid_key_is_detected_by_reason_not_status():
    f = classify(400, invalid_key_body())
    assert isinstance(f, F.InvalidKey) and f.status == 400
    assert isinstance(classify(400, error_body(400, "INVALID_ARGUMENT", "API Key not found. Please pass a valid API "
                                                                        "key.")), F.InvalidKey)


def test_per_minute_and_per_day_quotas_with_retry_delay():
    m = classify(429, quota_body("gemini-2.5-pro", "minute", "47s"))
    assert isinstance(m, F.QuotaExceeded) and m.per == "minute" and m.retry_after == 47.0
    assert m.quota_id.startswith("GenerateRequestsPerMinute")
    d = classify(429, quota_body("gemini-2.5-pro", "day", "3600s"))
    assert isinstance(d, F.DailyQuotaExceeded) and d.per == "day" and d.retry_after == 3600.0
    assert not isinstance(m, F.DailyQuotaExceeded)


def test_bare_quota_message_and_retry_hint_in_text():
    f = classify(429, error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."))
    assert isinstance(f, F.QuotaExceeded) and f.per is None and f.retry_after is None
    f = classify(429, error_body(429, "RESOURCE_EXHAUSTED", "quota...\nPlease retry in 7.967587226s."))
    assert f.retry_after == pytest.approx(7.967587226)


def test_suspended_and_leaked_keys_are_permanent_and_the_key_is_masked():
    f = classify(403, suspended_body(KEY))
    assert isinstance(f, F.KeySuspended) and f.reason == "CONSUMER_SUSPENDED"
    assert KEY not in f.message and "AIza…" in f.message
    f = classify(403, leaked_body())
    assert isinstance(f, F.KeySuspended) and f.reason == "KEY_LEAKED"
    f = classify(403, error_body(403, "PERMISSION_DENIED", "Generative Language API has not been used in project 1",
                                 [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED"}]))
    assert isinstance(f, F.KeySuspended) and f.reason == "SERVICE_DISABLED"


def test_other_permission_denied_is_not_permanent():
    f = classify(403, error_body(403, "PERMISSION_DENIED", "Permission denied on resource."))
    assert isinstance(f, F.PermissionDenied)


@pytest.mark.parametrize("status, body, kind", [
    (500, internal_body(), F.ServerError),
    (503, overloaded_body(), F.Overloaded),
    (504, error_body(504, "DEADLINE_EXCEEDED", "Deadline expired"), F.UpstreamTimeout),
    (404, not_found_body("gemini-9"), F.ModelNotFound),
    (400, bad_request_body("Please ensure that multiturn requests alternate between user and model."),
     F.RequestRejected),
    (400, error_body(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
     F.LocationBlocked),
    (401, error_body(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), F.InvalidKey),
    (502, b"<html>Bad Gateway</html>", F.ServerError),
    (413, b"", F.RequestRejected),
])
def test_status_table(status, body, kind):
    assert type(classify(status, body)) is kind


def test_vertex_list_wrapped_error_and_non_json_body():
    f = classify(429, [{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Resource exhausted."}}])
    assert isinstance(f, F.QuotaExceeded) and f.message == "Resource exhausted."
    f = classify(500, b"upstream connect error or disconnect/reset before headers")
    assert isinstance(f, F.ServerError) and "HTTP 500" in f.message and "reset before headers" in f.message


def test_classify_reply():
    assert F.classify_reply(text_reply("hi")) is None
    blocked = F.classify_reply({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    assert isinstance(blocked, F.PromptBlocked) and blocked.reason == "PROHIBITED_CONTENT"
    assert "PROHIBITED_CONTENT" in blocked.message
    assert isinstance(F.classify_reply({"candidates": []}), F.EmptyReply)
    thoughts_only = {"candidates": [{"content": {"parts": [{"text": "hmm", "thought": True}]}, "finishReason": "STOP"}]}
    assert isinstance(F.classify_reply(thoughts_only), F.EmptyReply)
    assert isinstance(F.classify_reply({"candidates": [{"finishReason": "SAFETY"}]}), F.OutputBlocked)
    assert isinstance(F.classify_reply({"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}]}),
                      F.TokenLimitReached)
    call = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}}]}
    assert F.classify_reply(call) is None
    assert isinstance(F.classify_reply([1, 2]), F.BadResponse)


def test_every_failure_type_has_a_policy_row():
    kinds = [c for c in vars(F).values() if isinstance(c, type) and issubclass(c, F.UpstreamFailure)
             and c is not F.UpstreamFailure]
    assert set(kinds) == set(POLICY)


def test_policy_rows():
    assert verdict(F.InvalidKey("x")).key is KeyEffect.DISABLE
    assert verdict(F.KeySuspended("x")).key is KeyEffect.DISABLE
    assert verdict(F.QuotaExceeded("x")).retry and verdict(F.QuotaExceeded("x")).key is KeyEffect.COOL
    assert verdict(F.DailyQuotaExceeded("x")).key is KeyEffect.EXHAUST
    for transient in (F.Overloaded, F.ServerError, F.UpstreamTimeout):
        assert verdict(transient("x")).key is KeyEffect.BACK_OFF
    assert verdict(F.PermissionDenied("x")).key is KeyEffect.REST
    assert verdict(F.Unreachable("x")).key is KeyEffect.NONE
    for never in (F.RequestRejected, F.PromptBlocked, F.ModelNotFound, F.LocationBlocked, F.TokenLimitReached):
        assert verdict(never("x")).retry is False
    assert verdict(F.EmptyReply("x")).empty


def test_client_error_all_quota_gives_429_with_retry_after():
    e = client_error(DispatchError([F.QuotaExceeded("q1", 429, per="minute", retry_after=47.2),
                                    F.QuotaExceeded("q2", 429, per="minute", retry_after=12.1)], model="m"))
    assert e.status == 429 and e.headers["Retry-After"] == "13" and "x-should-retry" not in e.headers
    assert e.code == "rate_limit_exceeded" and "for m" in e.message and e.type != "insufficient_quota"
    day = client_error(DispatchError([F.DailyQuotaExceeded("d", 429, per="day", retry_after=3600)]))
    assert day.headers["x-should-retry"] == "false"
    # what the pool knows wins over the hints in the failures
    pool_says = Unavailable(retry_at=2e9, retry_after=7200.4, quota=True, next_day=True, detail="m: exhausted")
    e = client_error(DispatchError([F.QuotaExceeded("q", 429, retry_after=5)], unavailable=pool_says, model="m"))
    assert e.headers == {"Retry-After": "7201", "x-should-retry": "false"}


def test_client_error_mixed_and_dead_keys():
    dead = client_error(DispatchError([F.InvalidKey("bad"), F.KeySuspended("gone")]))
    assert dead.status == 503 and dead.code == "no_usable_key"
    mixed = client_error(DispatchError([F.InvalidKey("bad"), F.QuotaExceeded("q", 429, retry_after=5)]))
    assert mixed.status == 429
    over = client_error(DispatchError([F.QuotaExceeded("q", 429), F.Overloaded("busy", 503)]))
    assert over.status == 503 and "2 attempts" in over.message
    assert client_error(DispatchError([F.ServerError("x", 500)])).status == 502
    assert client_error(DispatchError([F.UpstreamTimeout("x")])).status == 504
    nokey = client_error(DispatchError([], unavailable=Unavailable(math.inf, math.inf, False, False,
                                                                   "no key is configured")))
    assert nokey.status == 503 and "no key is configured" in nokey.message


def test_unavailable_answers():
    quota = unavailable_error(Unavailable(2e9, 30.2, True, False, "m: 3 cooling down"))
    assert quota.status == 429 and quota.headers == {"Retry-After": "31"} and "3 cooling down" in quota.message
    resting = unavailable_error(Unavailable(2e9, 2.0, False, False, "m: 3 resting"))
    assert resting.status == 503 and resting.headers == {"Retry-After": "2"} and resting.code == "keys_resting"
    dead = unavailable_error(Unavailable(math.inf, math.inf, False, False, "all 3 keys are disabled"))
    assert dead.status == 503 and "Retry-After" not in dead.headers


def test_client_error_for_requests_own_fault_keeps_upstream_status_and_message():
    e = client_error(DispatchError([F.RequestRejected("Please use a valid role: user, model.", 400)]))
    assert e.status == 400 and e.message == "Gemini: Please use a valid role: user, model."
    e = client_error(DispatchError([F.ModelNotFound("models/x is not found", 404)]))
    assert e.status == 404 and e.code == "model_not_found"
    e = client_error(DispatchError([F.PromptBlocked("Gemini blocked the prompt (blockReason: SAFETY)", 200)]))
    assert e.status == 400 and e.code == "content_filter" and "SAFETY" in e.message
