"""The key pool through the API: rotation, dead keys taken out, what is retried and what is not,
and the status the client gets when nothing worked."""
from __future__ import annotations

import collections
import time

import openai
import pytest

from server.clock import ManualClock
from server.pool.keys import KeyPool
from server.pool.quota import DailyLimits, QuotaDay
from server.settings import Settings
from tests.conftest import KEYS
from tests.fake_gemini import Reply, bad_request_body, text_reply

HELLO = [{"role": "user", "content": "hello"}]


def ask(kl, **kw):
    return kl.client().chat.completions.create(model=kw.pop("model", "gemini-2.0-flash"), messages=HELLO, **kw)


def test_requests_rotate_over_all_keys(keyloom, fake):
    for _ in range(9):
        ask(keyloom)
    used = collections.Counter(c.key for c in fake.generate_calls())
    assert used == {k: 3 for k in KEYS}


@pytest.mark.parametrize("behaviour", ["invalid", "suspended", "leaked"])
def test_a_dead_key_is_skipped_silently_and_never_tried_again(keyloom, fake, behaviour):
    dead = KEYS[0]
    fake.keys[dead] = behaviour
    for _ in range(6):
        assert ask(keyloom).choices[0].message.content == "Echo: hello"
    tried = [c.key for c in fake.generate_calls()]
    assert tried.count(dead) == 1
    assert keyloom.kl.pool.counts() == {"total": 3, "active": 2, "disabled": 1}
    key = keyloom.kl.pool.keys[0]
    assert key.disabled_reason and dead not in key.disabled_reason and dead not in repr(key)


def test_transient_errors_move_on_to_the_next_key(keyloom, fake):
    fake.script.extend([Reply(status=503), Reply(status=500), Reply(body=text_reply("third time lucky"))])
    assert ask(keyloom).choices[0].message.content == "third time lucky"
    assert len({c.key for c in fake.generate_calls()}) == 3


def test_a_request_that_gemini_rejects_is_not_retried(keyloom, fake):
    fake.script.append(Reply(status=400, body=bad_request_body("Please ensure that multiturn requests alternate "
                                                                "between user and model.")))
    with pytest.raises(openai.BadRequestError) as e:
        ask(keyloom)
    assert "alternate between user and model" in e.value.message
    assert len(fake.generate_calls()) == 1
    assert keyloom.kl.pool.counts()["disabled"] == 0


def test_unknown_model_is_404_without_spending_a_key(keyloom, fake):
    with pytest.raises(openai.NotFoundError) as e:
        ask(keyloom, model="gemini-0.5-imaginary")
    assert e.value.code == "model_not_found" and fake.generate_calls() == []
    assert [r.action for r in fake.requests] == ["listModels"]  # one refresh, in case it is brand new
    with pytest.raises(openai.NotFoundError):
        ask(keyloom, model="gemini-0.6-imaginary")
    assert len(fake.requests) == 1  # refreshing on a miss happens at most once a minute


def test_a_model_google_just_added_is_served_on_first_request(keyloom, fake):
    fake.models.append({"name": "models/gemini-brand-new", "supportedGenerationMethods": ["generateContent"]})
    try:
        assert ask(keyloom, model="gemini-brand-new").choices[0].message.content == "Echo: hello"
    finally:
        fake.models.pop()


def test_extra_models_are_listed_and_served(start_keyloom, fake):
    fake.models.append({"name": "models/gemini-unlisted-alias", "supportedGenerationMethods": ["embedContent"]})
    try:
        kl = start_keyloom(EXTRA_MODELS="gemini-unlisted-alias")
        assert "gemini-unlisted-alias" in [m.id for m in kl.client().models.list().data]
        fake.models[-1]["supportedGenerationMethods"] = ["generateContent"]  # the fake serves listed names only
        assert ask(kl, model="gemini-unlisted-alias").choices[0].message.content
    finally:
        fake.models.pop()


@pytest.mark.parametrize("behaviour, should_retry", [("quota_minute", None), ("quota_day", "false")])
def test_quota_everywhere_gives_429_with_retry_after(keyloom, fake, behaviour, should_retry):
    for k in KEYS:
        fake.keys[k] = behaviour
    with keyloom.http() as h:
        r = h.post("/v1/chat/completions", headers=keyloom.auth(), json={"model": "gemini-2.5-pro", "messages": HELLO})
    # per minute: Google's RetryInfo (47s); per day: until the quota day ends (midnight Pacific)
    expected = 47 if behaviour == "quota_minute" else keyloom.kl.quota_day.next_reset() - time.time()
    assert r.status_code == 429 and abs(int(r.headers["retry-after"]) - expected) <= 2
    assert r.headers.get("x-should-retry") == should_retry  # a daily quota: retrying soon is pointless
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and "gemini-2.5-pro" in err["message"]
    assert len(fake.generate_calls()) == 3  # each key once: a key over quota is not asked again in the request


@pytest.mark.parametrize("behaviour, status, exc", [
    ("overloaded", 503, openai.InternalServerError),
    ("internal", 502, openai.InternalServerError),
    ("invalid", 503, openai.InternalServerError),
])
def test_status_when_every_attempt_fails(start_keyloom, fake, behaviour, status, exc):
    kl = start_keyloom(MAX_RETRY_NUM="3")  # one round over the keys, no waiting for them to rest
    for k in KEYS:
        fake.keys[k] = behaviour
    with pytest.raises(exc) as e:
        ask(kl)
    assert e.value.status_code == status
    assert e.value.body and e.value.body.get("message")
    for k in KEYS:
        assert k not in str(e.value.body)


def test_max_retry_num_bounds_the_attempts(start_keyloom, fake):
    kl = start_keyloom(MAX_RETRY_NUM="5")
    for k in KEYS:
        fake.keys[k] = "overloaded"
    start = time.monotonic()
    with pytest.raises(openai.InternalServerError) as e:
        ask(kl)
    calls = fake.generate_calls()
    assert len(calls) == 5  # each key rests after its 503; the request waits for the first to come back
    assert [c.key for c in calls[:3]] == KEYS and calls[3].key == KEYS[0]
    assert calls[3].time - calls[2].time >= 0.9 and time.monotonic() - start < 5
    assert e.value.status_code == 503 and "5 attempts" in e.value.message


def test_upstream_timeout_is_504(start_keyloom, fake):
    kl = start_keyloom(UPSTREAM_TIMEOUT="1", MAX_RETRY_NUM="1")
    fake.script.append(Reply(delay=3))
    with pytest.raises(openai.APIStatusError) as e:
        ask(kl)
    assert e.value.status_code == 504


def test_unreachable_upstream_is_502(start_keyloom, fake):
    kl = start_keyloom(GEMINI_BASE_URL="http://127.0.0.1:9", MAX_RETRY_NUM="2", UPSTREAM_CONNECT_TIMEOUT="1")
    with pytest.raises(openai.APIStatusError) as e:
        ask(kl)
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable"


def test_no_keys_configured_is_503_and_models_list_is_empty(start_keyloom, fake):
    kl = start_keyloom(GEMINI_API_KEYS="")
    assert kl.client().models.list().data == []
    with pytest.raises(openai.InternalServerError) as e:
        ask(kl)
    assert e.value.status_code == 503 and "GEMINI_API_KEYS" in e.value.message


def test_malformed_key_values_are_ignored_not_sent(start_keyloom, fake):
    kl = start_keyloom(GEMINI_API_KEYS=f"{KEYS[0]}, short, {KEYS[0]}\n{KEYS[1]}")
    assert kl.kl.pool.counts()["total"] == 2 and kl.kl.pool.rejected == 1


def test_empty_reply_is_retried_then_reported(start_keyloom, fake):
    kl = start_keyloom(MAX_EMPTY_RESPONSES="1")
    empty = {"candidates": [{"content": {"parts": [{"text": "", "thought": True}], "role": "model"},
                             "finishReason": "STOP"}]}
    fake.script.extend([Reply(body=empty), Reply(body=text_reply("finally"))])
    assert ask(kl).choices[0].message.content == "finally"
    fake.script.extend([Reply(body=empty), Reply(body=empty), Reply(body=empty)])
    with pytest.raises(openai.APIStatusError) as e:
        ask(kl)
    assert e.value.status_code == 502 and e.value.body["code"] == "empty_response"
    assert len(fake.generate_calls()) == 2 + 2
    usage = kl.kl.pool.usage
    empties = sum(usage.get(k.fp, "gemini-2.0-flash").failure_kinds.get("EmptyReply", 0)
                  for k in kl.kl.pool.keys if usage.get(k.fp, "gemini-2.0-flash"))
    assert empties == 3  # counted against the keys that returned them


def test_blocked_prompt_is_a_clear_error_not_an_empty_200(keyloom, fake):
    fake.script.append(Reply(body={"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                   "usageMetadata": {"promptTokenCount": 5}}))
    with pytest.raises(openai.BadRequestError) as e:
        ask(keyloom)
    assert "PROHIBITED_CONTENT" in e.value.message and e.value.code == "content_filter"
    assert len(fake.generate_calls()) == 1


def test_pool_selection_unit():
    clock = ManualClock()
    settings = Settings.from_env({"API_KEY_DAILY_LIMIT": "0"})
    pool = KeyPool(KEYS, clock, QuotaDay(clock, "America/Los_Angeles"), DailyLimits(lambda: settings))
    a, b, c = pool.keys
    assert [pool.pick("m").fp for _ in range(4)] == [a.fp, b.fp, c.fp, a.fp]
    assert pool.pick("m", avoid={a.fp, c.fp}) is b
    assert pool.pick("m", avoid={a.fp, b.fp, c.fp}) is None
    pool.disable(b, "bad key")
    assert all(pool.pick("m") is not b for _ in range(5))
    assert b.disabled_at == clock.time()
