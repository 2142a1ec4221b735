"""Concurrent attempt rounds, client limits (per minute, per IP per day, X-Forwarded-For), and the request log."""
from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from server.clock import ManualClock
from server.limits import client_ip, proxy_hops
from tests.conftest import KEYS, PASSWORD
from tests.fake_gemini import Reply, text_reply

HELLO = [{"role": "user", "content": "hello"}]


def wait_for(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return cond()


# -- rounds --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fake_streaming", ["true", "false"])
def test_width_2_asks_two_keys_at_once_and_cancels_the_loser(start_keyloom, fake, fake_streaming):
    kl = start_keyloom(CONCURRENT_REQUESTS="2", FAKE_STREAMING=fake_streaming)
    never = threading.Event()  # the first key's answer is held until the test ends: only a concurrent ask gets past
    fake.script.extend([Reply(gate=never, body=text_reply("slow")), Reply(body=text_reply("fast"))])
    try:
        chunks = list(kl.client().chat.completions.create(model="gemini-2.0-flash", messages=HELLO, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "fast"
        calls = fake.generate_calls()
        assert len(calls) == 2 and calls[0].key != calls[1].key
        assert wait_for(lambda: fake.cancelled == 1)  # the slow one was hung up on
        usage = kl.kl.pool.usage
        assert sum(usage.requests(k.fp, "gemini-2.0-flash") for k in kl.kl.pool.keys) == 2  # both reached Google
    finally:
        never.set()


def test_a_failed_round_widens_the_next(start_keyloom, fake):
    clock = ManualClock()  # key rests (1 s after a first 5xx) end when the test says, not when a busy machine does
    kl = start_keyloom(clock=clock, CONCURRENT_REQUESTS="1", INCREASE_CONCURRENT_ON_FAILURE="1",
                       MAX_CONCURRENT_REQUESTS="3")
    round2 = threading.Event()
    fake.script.extend([Reply(status=500), Reply(gate=round2, status=500), Reply(gate=round2, status=500),
                        Reply(body=text_reply("third round"))])

    def release_round_2() -> None:
        # round 2's answers wait until both of its calls have arrived (they were asked at once); by then the key
        # of round 1 has rested its second, while round 2's keys start resting only when their 500s come
        if wait_for(lambda: len(fake.generate_calls()) == 3, 30):
            clock.advance(1.5)
            round2.set()

    released = threading.Thread(target=release_round_2, daemon=True)
    released.start()
    r = kl.client().chat.completions.create(model="gemini-2.0-flash", messages=HELLO)
    assert r.choices[0].message.content == "third round"
    assert round2.is_set()
    # round 3 (width 3) found only one key ready: the other two were resting after their 500s
    assert len(fake.generate_calls()) == 4


def test_a_request_the_upstream_rejects_ends_the_round_at_once(start_keyloom, fake):
    kl = start_keyloom(CONCURRENT_REQUESTS="3")
    held = threading.Event()
    fake.script.extend([Reply(status=400, body={"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                          "message": "bad request"}}),
                        Reply(gate=held), Reply(gate=held)])
    try:
        with pytest.raises(openai.BadRequestError):
            kl.client().chat.completions.create(model="gemini-2.0-flash", messages=HELLO)
        assert not held.is_set()  # answered while the two others were still held: the round ended at once
        assert wait_for(lambda: fake.cancelled == 2)
    finally:
        held.set()


# -- client limits -------------------------------------------------------------------------------

def test_requests_per_minute_across_all_clients(start_keyloom, fake):
    clock = ManualClock()
    kl = start_keyloom(clock=clock, MAX_REQUESTS_PER_MINUTE="3")
    with kl.http() as h:
        statuses = [h.post("/v1/chat/completions", headers=kl.auth(),
                           json={"model": "gemini-2.0-flash", "messages": HELLO}).status_code for _ in range(3)]
        over = h.post("/v1/chat/completions", headers=kl.auth(), json={"model": "gemini-2.0-flash", "messages": HELLO})
        assert statuses == [200, 200, 200] and over.status_code == 429
        assert over.json()["error"]["code"] == "rate_limit_exceeded" and 1 <= int(over.headers["retry-after"]) <= 60
        assert "MAX_REQUESTS_PER_MINUTE" in over.json()["error"]["message"]
        clock.advance(60)
        assert h.post("/v1/chat/completions", headers=kl.auth(),
                      json={"model": "gemini-2.0-flash", "messages": HELLO}).status_code == 200
    assert len(fake.generate_calls()) == 4  # the refused one cost no key


def ask_from(kl, forwarded=None):
    headers = dict(kl.auth())
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    with kl.http() as h:
        return h.post("/v1/chat/completions", headers=headers, json={"model": "gemini-2.0-flash", "messages": HELLO})


def test_per_ip_per_day_limit_cannot_be_dodged_with_a_spoofed_header(start_keyloom, fake):
    kl = start_keyloom(MAX_REQUESTS_PER_DAY_PER_IP="2", TRUST_PROXY_HEADERS="false")
    assert ask_from(kl, "198.51.100.1").status_code == 200
    assert ask_from(kl, "198.51.100.2").status_code == 200
    third = ask_from(kl, "198.51.100.3")
    assert third.status_code == 429 and third.headers["x-should-retry"] == "false"
    assert "MAX_REQUESTS_PER_DAY_PER_IP" in third.json()["error"]["message"]
    assert kl.kl.client_limits.per_ip == {"127.0.0.1": 2}


def test_per_ip_limit_behind_a_trusted_proxy(start_keyloom, fake):
    kl = start_keyloom(MAX_REQUESTS_PER_DAY_PER_IP="2", TRUST_PROXY_HEADERS="1")
    # the proxy appends the address it saw: only the rightmost entry is trusted
    assert ask_from(kl, "203.0.113.7").status_code == 200
    assert ask_from(kl, "1.2.3.4, 203.0.113.7").status_code == 200   # a spoofed left part changes nothing
    assert ask_from(kl, "203.0.113.7").status_code == 429
    assert ask_from(kl, "203.0.113.8").status_code == 200            # another client
    assert kl.kl.client_limits.per_ip == {"203.0.113.7": 2, "203.0.113.8": 1}


def test_auto_trusts_one_hop_only_on_a_huggingface_space(start_keyloom, fake):
    assert proxy_hops("auto", {"SPACE_ID": "owner/space"}) == 1
    assert proxy_hops("auto", {}) == 0
    assert proxy_hops(2, {}) == 2
    kl = start_keyloom(MAX_REQUESTS_PER_DAY_PER_IP="5", env={"SPACE_ID": "someone/keyloom"})
    ask_from(kl, "192.0.2.44")
    assert kl.kl.client_limits.per_ip == {"192.0.2.44": 1}


class _Req:
    def __init__(self, peer, xff=None):
        self.remote_ip = peer
        self.headers = {"X-Forwarded-For": xff} if xff else {}


@pytest.mark.parametrize("hops, xff, expected", [
    (0, "9.9.9.9", "10.0.0.1"), (1, None, "10.0.0.1"), (1, "9.9.9.9", "9.9.9.9"), (1, "1.1.1.1, 9.9.9.9", "9.9.9.9"),
    (2, "1.1.1.1, 9.9.9.9", "1.1.1.1"), (2, "9.9.9.9", "9.9.9.9"), (1, "not-an-ip", "10.0.0.1"),
    (1, "2001:db8::1", "2001:db8::1"),
])
def test_client_ip(hops, xff, expected):
    assert client_ip(_Req("10.0.0.1", xff), hops) == expected


# -- request log ---------------------------------------------------------------------------------

def test_every_client_request_gets_one_log_row(start_keyloom, fake, loop_thread):
    kl = start_keyloom(MAX_REQUESTS_PER_MINUTE="2")  # a bad request does not count against the limit
    fake.keys[KEYS[0]] = "suspended"   # Google quotes the key in that message
    c = kl.client()
    c.chat.completions.create(model="gemini-2.0-flash", messages=HELLO)
    list(c.chat.completions.create(model="gemini-2.5-flash", messages=HELLO, stream=True))
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="gemini-2.0-flash", messages=[])
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model="gemini-2.0-flash", messages=HELLO)
    with httpx.Client() as h:  # refused before it was read: no row
        h.post(kl.url + "/v1/chat/completions", json={"model": "m", "messages": HELLO})
    loop_thread.run(kl.kl.flusher.flush())
    rows = loop_thread.run(kl.kl.db.fetchall(
        "SELECT model, key_fp, attempts, status, prompt_tokens, completion_tokens, client_ip, stream, error "
        "FROM request_log ORDER BY id"))
    assert [(r[0], r[3], r[7]) for r in rows] == [("gemini-2.0-flash", 200, 0), ("gemini-2.5-flash", 200, 1),
                                                 ("gemini-2.0-flash", 400, 0), ("gemini-2.0-flash", 429, 0)]
    first = rows[0]
    assert first[2] == 2 and first[1] == kl.kl.pool.keys[1].fp  # the suspended key, then the next one
    assert first[4] == 10 and first[5] > 0 and first[6] == "127.0.0.1"
    assert "messages" in rows[2][8] and "MAX_REQUESTS_PER_MINUTE" in rows[3][8]
    dump = repr(rows) + repr(loop_thread.run(kl.kl.db.fetchall("SELECT * FROM key_state")))
    assert KEYS[0] not in dump and PASSWORD not in dump
