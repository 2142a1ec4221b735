"""ALERT_WEBHOOK_URL: a receiver on loopback gets one POST per event, rate-limited, never with a key in it."""
from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from server.clock import ManualClock
from server.redact import fingerprint, mask
from tests.conftest import KEYS, PASSWORD
from tests.support.wait import wait_until

MODEL = "gemini-2.0-flash"
HI = [{"role": "user", "content": "hi"}]


class Receiver:
    """A webhook receiver: keeps every body; answers `status`; while `hold` is set, keeps each POST waiting."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.status = 204
        self.hold: asyncio.Event | None = None
        self.waiting = 0
        self.server: HTTPServer | None = None
        self.url = ""

    async def start(self) -> None:
        receiver = self

        class Hook(tornado.web.RequestHandler):
            async def post(self) -> None:
                if receiver.hold is not None:
                    receiver.waiting += 1
                    await receiver.hold.wait()
                receiver.raw.append(self.request.body)
                receiver.bodies.append(json.loads(self.request.body))
                self.set_status(receiver.status)
                self.finish()

        self.server = HTTPServer(tornado.web.Application([(r"/hook", Hook)]))
        sockets = bind_sockets(0, "127.0.0.1")
        self.server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hook"

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        assert self.server is not None
        self.server.stop()
        await self.server.close_all_connections()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["event"] == name]


@pytest.fixture
def receiver(loop_thread) -> Iterator[Receiver]:
    r = Receiver()
    loop_thread.run(r.start())
    yield r
    loop_thread.run(r.stop())


def settle(running, receiver: Receiver) -> None:
    """A sequence point: alerts go out one at a time in order, so once a marker queued now has arrived, every
    alert queued before it has too."""
    n = len(receiver.events("test_marker"))
    running.loop.call(running.kl.alerts.emit, "test_marker", f"marker-{n}", "marker")
    wait_until(lambda: len(receiver.events("test_marker")) > n, "the marker alert")


def assert_no_key_text(receiver: Receiver) -> None:
    for raw in receiver.raw:
        text = raw.decode()
        for key in KEYS:
            assert key not in text and key[4:] not in text
        assert "AIza" + KEYS[0][4:12] not in text and PASSWORD not in text


def chat(running, n: int = 1) -> list[int]:
    statuses = []
    with running.http() as h:
        for _ in range(n):
            statuses.append(h.post("/v1/chat/completions", headers=running.auth(),
                                   json={"model": MODEL, "messages": HI}).status_code)
    return statuses


def test_a_disabled_key_is_reported_once_by_fingerprint_and_masked_form(start_keyloom, fake, receiver):
    running = start_keyloom(ALERT_WEBHOOK_URL=receiver.url, CONCURRENT_REQUESTS="1")
    fake.allow(KEYS[0], behaviour="suspended")  # Google's message quotes the key itself
    assert chat(running, 6) == [200] * 6
    settle(running, receiver)
    [alert] = receiver.events("key_disabled")
    assert alert["key_fingerprint"] == fingerprint(KEYS[0]) and alert["key_masked"] == mask(KEYS[0])
    assert alert["provider"] == "gemini" and alert["time"].endswith("+00:00")
    assert mask(KEYS[0]) in alert["message"] and "out of rotation" in alert["message"]
    assert alert["text"] == alert["content"] == alert["message"]  # Slack's and Discord's field
    assert receiver.events("no_usable_key") == []  # two keys are still usable
    assert_no_key_text(receiver)


def test_every_key_disabled_reports_no_usable_key_once(start_keyloom, fake, receiver):
    running = start_keyloom(ALERT_WEBHOOK_URL=receiver.url)
    fake.allow(*KEYS, behaviour="invalid")
    assert chat(running, 3) == [503] * 3  # the later requests find no key at all: the same alert, suppressed
    settle(running, receiver)
    assert sorted(a["key_fingerprint"] for a in receiver.events("key_disabled")) == \
        sorted(fingerprint(k) for k in KEYS)
    [alert] = receiver.events("no_usable_key")
    assert alert["provider"] == "gemini" and "no usable key" in alert["message"]
    assert alert["key_fingerprint"] is None and alert["key_masked"] is None
    assert running.kl.alerts.suppressed >= 2
    assert_no_key_text(receiver)


def test_quota_gone_on_every_key_is_rate_limited_per_model(start_keyloom, fake, receiver):
    clock = ManualClock()
    running = start_keyloom(clock=clock, ALERT_WEBHOOK_URL=receiver.url, ALERT_WEBHOOK_MINUTES="10")
    fake.allow(*KEYS, behaviour="quota_day")
    assert chat(running, 3) == [429] * 3
    settle(running, receiver)
    [alert] = receiver.events("quota_exhausted")
    assert alert["model"] == MODEL and alert["provider"] == "gemini" and MODEL in alert["message"]
    assert running.kl.alerts.suppressed == 2

    clock.advance(9 * 60)  # still inside the 10 minutes
    assert chat(running) == [429]
    settle(running, receiver)
    assert len(receiver.events("quota_exhausted")) == 1

    clock.advance(60)  # the window has passed: the next occurrence is sent
    assert chat(running) == [429]
    settle(running, receiver)
    assert len(receiver.events("quota_exhausted")) == 2
    assert receiver.events("key_disabled") == []  # a spent quota is not a bad key
    assert_no_key_text(receiver)


def test_a_slow_or_failing_receiver_never_holds_a_request(start_keyloom, fake, receiver, loop_thread):
    receiver.hold = loop_thread.run(_event())
    running = start_keyloom(ALERT_WEBHOOK_URL=receiver.url)
    fake.allow(*KEYS, behaviour="invalid")
    assert chat(running) == [503]  # answered while the receiver still holds the first alert
    wait_until(lambda: receiver.waiting == 1, "the receiver to hold the first alert")
    assert receiver.bodies == []
    receiver.status = 500
    loop_thread.call(receiver.hold.set)
    wait_until(lambda: running.kl.alerts.failed == 4, "the four alerts to be answered 500")  # 3 keys + no key
    assert running.kl.alerts.sent == 0

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    fake.allow(*KEYS)
    other = start_keyloom(ALERT_WEBHOOK_URL=dead, CONCURRENT_REQUESTS="1")
    fake.allow(KEYS[0], behaviour="invalid")
    assert chat(other, 3) == [200] * 3
    wait_until(lambda: other.kl.alerts.failed == 1, "the failed POST to be counted")


def test_no_url_no_alerts(start_keyloom, fake):
    running = start_keyloom()
    fake.allow(*KEYS, behaviour="invalid")
    assert chat(running) == [503]
    alerts = running.kl.alerts
    assert alerts.sent == alerts.failed == alerts.suppressed == 0 and not alerts._queue and alerts._task is None


async def _event() -> asyncio.Event:
    return asyncio.Event()
