"""Not paying twice: in-flight sharing, the cache of answers nobody received (handed out once),
spare answers of concurrent rounds, and whitespace keep-alives before a slow non-streaming body."""
from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time

import httpx
import openai
import pytest

from server.clock import ManualClock
from tests.fake_gemini import Reply, text_reply
from tests.support.wait import wait_until

BODY = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "tell me a story"}]}


def post(running, body=BODY, timeout=20.0):
    with httpx.Client(base_url=running.url, timeout=timeout) as http:
        return http.post("/v1/chat/completions", headers=running.auth(), json=body)


def numbered(delay=0.0):
    """Each upstream call answers with a new number, after `delay` seconds."""
    counter = itertools.count(1)
    return lambda rec: Reply(body=text_reply(f"answer {next(counter)}"), delay=delay)


def test_identical_concurrent_requests_share_one_upstream_call(start_keyloom, fake):
    running = start_keyloom(INFLIGHT_SHARING="true")
    gate = threading.Event()  # the upstream answers only once all three requests are in Keyloom's hands
    counter = itertools.count(1)
    fake.responder = lambda rec: Reply(body=text_reply(f"answer {next(counter)}"), gate=gate)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(post, running)
        wait_until(lambda: len(fake.generate_calls()) == 1, "the first request to reach the upstream")
        second = pool.submit(post, running)
        other = pool.submit(post, running, {**BODY, "messages": [{"role": "user", "content": "something else"}]})
        wait_until(lambda: running.kl.in_flight == 3 and len(fake.generate_calls()) == 2, "all three in flight")
        gate.set()
        r1, r2, r3 = first.result(), second.result(), other.result()
    assert r1.status_code == r2.status_code == r3.status_code == 200
    assert r1.json()["choices"][0]["message"]["content"] == r2.json()["choices"][0]["message"]["content"]
    assert r2.headers["x-keyloom-answer"] == "shared" and "x-keyloom-answer" not in r1.headers
    assert len(fake.generate_calls()) == 2  # one for the pair, one for the different request
    assert running.kl.reuse.stats.shared == 1


def test_sharing_off_means_two_calls(start_keyloom, fake):
    running = start_keyloom(INFLIGHT_SHARING="false")
    fake.responder = numbered(delay=0.3)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        rs = list(pool.map(lambda _: post(running), range(2)))
    assert {r.json()["choices"][0]["message"]["content"] for r in rs} == {"answer 1", "answer 2"}
    assert len(fake.generate_calls()) == 2


def test_an_answer_nobody_received_is_handed_out_once(start_keyloom, fake):
    clock = ManualClock(time.time())
    running = start_keyloom(clock=clock, CACHE_EXPIRY_TIME="600")
    fake.responder = numbered(delay=0.5)
    with pytest.raises(httpx.TimeoutException):
        post(running, timeout=0.2)  # the client gives up; Google still answers and it is paid for
    deadline = time.monotonic() + 5
    while len(running.kl.reuse) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(running.kl.reuse) == 1 and fake.cancelled == 0
    retry = post(running)
    assert retry.json()["choices"][0]["message"]["content"] == "answer 1"
    assert retry.headers["x-keyloom-answer"] == "cache"
    assert len(fake.generate_calls()) == 1
    again = post(running)  # once only: the next identical request is a new answer
    assert again.json()["choices"][0]["message"]["content"] == "answer 2" and "x-keyloom-answer" not in again.headers
    # a received answer is never cached: a swipe must not repeat it
    assert len(running.kl.reuse) == 0
    s = running.kl.reuse.stats
    assert (s.cache_hits, s.cached_unreceived) == (1, 1)


def test_cached_answers_expire(start_keyloom, fake):
    clock = ManualClock(time.time())
    running = start_keyloom(clock=clock, CACHE_EXPIRY_TIME="60")
    fake.responder = numbered(delay=0.4)
    with pytest.raises(httpx.TimeoutException):
        post(running, timeout=0.15)
    deadline = time.monotonic() + 5
    while len(running.kl.reuse) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    clock.advance(61)
    assert post(running).json()["choices"][0]["message"]["content"] == "answer 2"
    assert running.kl.reuse.stats.expired == 1


def test_cache_off_hanging_up_cancels_the_upstream_call(start_keyloom, fake):
    running = start_keyloom(CACHE_EXPIRY_TIME="0")
    fake.responder = numbered(delay=1.0)
    with pytest.raises(httpx.TimeoutException):
        post(running, timeout=0.2)
    deadline = time.monotonic() + 3
    while fake.cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.cancelled == 1 and len(running.kl.reuse) == 0


def test_spare_answers_of_concurrent_rounds_become_the_next_swipe(start_keyloom, fake):
    running = start_keyloom(CONCURRENT_REQUESTS="2", CACHE_EXPIRY_TIME="600")
    delays = iter([0.05, 0.4])
    counter = itertools.count(1)
    fake.responder = lambda rec: Reply(body=text_reply(f"answer {next(counter)}"), delay=next(delays, 0.0))
    first = post(running).json()["choices"][0]["message"]["content"]
    assert len(fake.generate_calls()) == 2  # two keys asked at once
    deadline = time.monotonic() + 5
    while len(running.kl.reuse) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    swipe = post(running)
    assert swipe.headers["x-keyloom-answer"] == "cache"
    assert swipe.json()["choices"][0]["message"]["content"] != first
    assert len(fake.generate_calls()) == 2  # the swipe cost nothing
    pool = running.kl.pool
    assert sum(pool.usage.get(k.fp, "gemini-2.5-flash").successes for k in pool.keys
               if pool.usage.get(k.fp, "gemini-2.5-flash")) == 2  # the spare was booked on its key
    assert running.kl.reuse.stats.cached_spares == 1


def test_fake_stream_can_be_answered_from_the_cache(start_keyloom, fake):
    running = start_keyloom(CONCURRENT_REQUESTS="2", CACHE_EXPIRY_TIME="600", FAKE_STREAMING="true")
    delays = iter([0.05, 0.3])
    fake.responder = lambda rec: Reply(body=text_reply("streamed spare"), delay=next(delays, 0.0))
    body = {**BODY, "stream": True}
    post(running, body)
    deadline = time.monotonic() + 5
    while len(running.kl.reuse) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    r = post(running, body)
    assert r.headers["x-keyloom-answer"] == "cache" and "streamed spare" in r.text and r.text.endswith("[DONE]\n\n")


def test_nonstream_keepalive_sends_whitespace_before_a_slow_body(start_keyloom, fake):
    running = start_keyloom(NONSTREAM_KEEPALIVE="true", NONSTREAM_KEEPALIVE_INTERVAL="0.5")
    fake.script.append(Reply(body=text_reply("slow answer"), delay=1.3))
    with httpx.Client(base_url=running.url, timeout=20) as http:
        with http.stream("POST", "/v1/chat/completions", headers=running.auth(), json=BODY) as r:
            arrivals = [(time.monotonic(), piece) for piece in r.iter_raw()]
    raw = b"".join(p for _, p in arrivals)
    assert r.status_code == 200 and raw.startswith(b"  ") and raw.lstrip().startswith(b"{")
    assert len(raw) - len(raw.lstrip()) == 2  # at 0.5 s and 1.0 s
    import json
    assert json.loads(raw)["choices"][0]["message"]["content"] == "slow answer"
    # the official SDK reads such a body as usual
    fake.script.append(Reply(body=text_reply("sdk answer"), delay=0.7))
    out = running.client().chat.completions.create(**BODY)
    assert out.choices[0].message.content == "sdk answer"
    # a quick answer gets no whitespace, and a quick error keeps its status
    assert not post(running).content.startswith(b" ")
    with pytest.raises(openai.NotFoundError):
        running.client().chat.completions.create(model="no-such-model", messages=BODY["messages"])
    assert running.kl.reuse.stats.keepalive_bodies == 2


def test_nonstream_keepalive_error_after_whitespace_travels_in_the_body(start_keyloom, fake):
    running = start_keyloom(NONSTREAM_KEEPALIVE="true", NONSTREAM_KEEPALIVE_INTERVAL="0.5", MAX_RETRY_NUM="1")
    fake.script.append(Reply(status=500, delay=0.8))
    r = post(running)
    assert r.status_code == 200 and r.content.startswith(b" ")
    assert r.json()["error"]["type"] == "server_error"
