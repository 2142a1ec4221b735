"""What one request's image URLs may make Keyloom do: how many it fetches, how many bytes it holds, that a failure
or a hang-up stops the other downloads, and which hosts it refuses before any lookup or connection.

Everything is served from loopback; a test that names another host checks that no lookup happens at all."""
from __future__ import annotations

import asyncio
import base64
import collections
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from server.translate.openai_to_gemini import remote_image_urls

WAIT = 30.0  # generous: the deadline of waits for events, never a pause that orders anything


class Seen:
    """What the image server saw, counted per kind; the test thread and the server's loop can both wait on it."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._cond = threading.Condition()
        self._waiters: list[tuple[str, int, asyncio.Future[None]]] = []

    def bump(self, what: str) -> None:  # on the loop
        with self._cond:
            self.counts[what] += 1
            self._cond.notify_all()
        for w in [w for w in self._waiters if self.counts[w[0]] >= w[1]]:
            self._waiters.remove(w)
            if not w[2].done():
                w[2].set_result(None)

    def wait(self, what: str, n: int) -> bool:  # in the test thread
        with self._cond:
            return self._cond.wait_for(lambda: self.counts[what] >= n, WAIT)

    async def reached(self, what: str, n: int) -> None:  # on the loop
        if self.counts[what] < n:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append((what, n, fut))
            await fut


class Base(tornado.web.RequestHandler):
    def initialize(self, seen: Seen) -> None:
        self.seen = seen

    def prepare(self) -> None:
        self.seen.bump("requests")


class Sized(Base):
    """An image of exactly n bytes, with a Content-Length (/sized/n) or in chunks without one (/chunked/n)."""

    async def get(self, how: str, n: str) -> None:
        body = b"\x89PNG" + b"0" * (int(n) - 4)
        self.set_header("Content-Type", "image/png")
        if how == "sized":
            self.write(body)
            return
        for i in range(0, len(body), 8192):
            self.write(body[i:i + 8192])
            await self.flush()


class Hang(Base):
    """Answers nothing until the client closes the connection."""

    def prepare(self) -> None:
        super().prepare()
        self.gone = asyncio.get_running_loop().create_future()

    async def get(self, _: str) -> None:
        self.seen.bump("hanging")
        await self.gone

    def on_connection_close(self) -> None:
        self.seen.bump("closed")
        if not self.gone.done():
            self.gone.set_result(None)


class FailAfter(Base):
    """A 404, sent once n other requests hang: so the failure surely comes while they are under way."""

    async def get(self, n: str) -> None:
        await self.seen.reached("hanging", int(n))
        self.set_status(404)


@pytest.fixture
def images(loop_thread) -> Iterator[tuple[str, Seen]]:
    seen = Seen()

    async def start() -> tuple[HTTPServer, str]:
        kw = {"seen": seen}
        app = tornado.web.Application([(r"/img/(sized|chunked)/(\d+)", Sized, kw), (r"/img/hang/(.+)", Hang, kw),
                                       (r"/img/fail-after/(\d+)", FailAfter, kw)], log_function=lambda h: None)
        server = HTTPServer(app)
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        return server, f"http://127.0.0.1:{sockets[0].getsockname()[1]}/img"

    server, url = loop_thread.run(start())
    yield url, seen
    loop_thread.call(server.stop)


@pytest.fixture
def lookups(monkeypatch) -> list[Any]:
    """Host names looked up while the test runs. Only loopback is really resolved; any other lookup fails at once,
    so a test that names an outside host sends nothing anywhere, and can tell that nothing was attempted."""
    seen: list[Any] = []
    real = socket.getaddrinfo

    def guard(host, *args, **kw):
        if host in ("127.0.0.1", "localhost", b"127.0.0.1", b"localhost"):
            return real(host, *args, **kw)
        seen.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "no lookups in this test")

    monkeypatch.setattr(socket, "getaddrinfo", guard)
    return seen


def chat_body(urls: list[str]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "what are these?"}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": parts}]}


def post(kl, urls: list[str], timeout: float = 120.0):
    with kl.http(timeout=timeout) as h:
        return h.post("/v1/chat/completions", headers=kl.auth(), json=chat_body(urls))


def error_of(resp) -> str:
    assert resp.status_code == 400, resp.text[:500]
    return resp.json()["error"]["message"]


# -- how many -----------------------------------------------------------------------------------------------------


class CountedStr(str):
    """A str that counts how often it is compared, and refuses to be compared more than a linear number of times."""

    budget = 0

    def __eq__(self, other: object) -> bool:
        CountedStr.budget -= 1
        if CountedStr.budget < 0:
            raise AssertionError("image URLs are compared pairwise (quadratic de-duplication)")
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_remote_image_urls_keep_order_and_drop_duplicates_without_pairwise_comparison():
    distinct = [CountedStr(f"https://example.com/{i}.png") for i in range(32_000)]
    again = [CountedStr(str(u)) for u in distinct[::7]]  # equal, not identical: each costs one comparison at most
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in distinct + again]
    CountedStr.budget = 2 * len(parts)
    assert remote_image_urls({"messages": [{"role": "user", "content": parts}]}) == distinct


def test_more_distinct_urls_than_allowed_are_refused_before_anything_is_fetched(start_keyloom, fake, images):
    url, seen = images
    kl = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true")  # fetching them would be allowed: the count is what stops it
    message = error_of(post(kl, [f"{url}/sized/100?n={i}" for i in range(32_000)]))
    assert "IMAGE_FETCH_MAX_IMAGES" in message and "32000" in message
    assert seen.counts["requests"] == 0
    assert fake.generate_calls() == []


def test_zero_max_images_turns_image_urls_off(start_keyloom, fake, images):
    url, seen = images
    kl = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true", IMAGE_FETCH_MAX_IMAGES="0")
    assert "IMAGE_FETCH_MAX_IMAGES" in error_of(post(kl, [f"{url}/sized/100"]))
    assert seen.counts["requests"] == 0
    assert fake.generate_calls() == []


# -- how many bytes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sized", "chunked"])
def test_total_bytes_of_a_requests_images_are_capped(start_keyloom, fake, images, how):
    url, seen = images
    # 0.05 MiB per image, 0.1 MiB (104857 bytes) in all: three maxima would not fit, three 30 kB images do
    kl = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true", IMAGE_FETCH_MAX_MB="0.05", IMAGE_FETCH_TOTAL_MB="0.1")
    message = error_of(post(kl, [f"{url}/{how}/40000?n={i}" for i in range(3)]))  # 120000 bytes
    assert "IMAGE_FETCH_TOTAL_MB" in message
    assert fake.generate_calls() == []

    resp = post(kl, [f"{url}/{how}/30000?n={i}" for i in range(3)])  # 90000 bytes
    assert resp.status_code == 200, resp.text[:500]
    parts = fake.generate_calls()[0].body["contents"][0]["parts"][1:]
    expected = base64.b64encode(b"\x89PNG" + b"0" * 29996).decode()
    assert parts == [{"inlineData": {"mimeType": "image/png", "data": expected}}] * 3


# -- stopping -----------------------------------------------------------------------------------------------------


def test_one_failed_image_cancels_the_other_downloads(start_keyloom, fake, images):
    url, seen = images
    kl = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true", IMAGE_FETCH_TIMEOUT="300")
    urls = [f"{url}/hang/{i}" for i in range(3)] + [f"{url}/fail-after/3"]
    message = error_of(post(kl, urls))
    assert "HTTP 404" in message and "fail-after" in message
    assert seen.wait("closed", 3), f"the other downloads were left running: {dict(seen.counts)}"
    assert seen.counts["hanging"] == 3
    assert fake.generate_calls() == []


def test_client_hanging_up_cancels_the_downloads(start_keyloom, fake, images):
    url, seen = images
    kl = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true", IMAGE_FETCH_TIMEOUT="300")
    body = json.dumps(chat_body([f"{url}/hang/{i}" for i in range(3)])).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {kl.auth()['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", kl.kl.port), timeout=WAIT) as client:
        client.sendall(head + body)
        assert seen.wait("hanging", 3), f"the downloads did not start: {dict(seen.counts)}"
    assert seen.wait("closed", 3), f"the downloads outlived the client: {dict(seen.counts)}"
    assert fake.generate_calls() == []


# -- where --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["100.64.0.1", "169.254.169.254", "[::ffff:127.0.0.1]", "[fec0::1]",
                                     "[2002:c0a8:101::1]", "[64:ff9b::a00:1]",
                                     "[2001:0:4136:e378:8000:63bf:3fff:fdd2]"])
def test_addresses_that_are_not_globally_routable_are_refused_without_a_lookup(keyloom, fake, lookups, address):
    message = error_of(post(keyloom, [f"http://{address}/cat.png"]))
    assert "private or local address" in message and address in message
    assert lookups == []
    assert fake.generate_calls() == []


@pytest.mark.parametrize("host", ["exa\uff0emple.com", "\u0661\u0662\u0663.com", "a" * 64 + ".com",
                                  "\uff11\uff12\uff17.0.0.1"])
def test_host_names_that_cannot_be_encoded_are_a_400_without_a_lookup(keyloom, fake, lookups, host):
    message = error_of(post(keyloom, [f"http://{host}/cat.png"]))
    assert "host name" in message
    assert lookups == []
    assert fake.generate_calls() == []


def test_a_path_outside_ascii_is_sent_percent_encoded(start_keyloom, fake, images):
    url, seen = images
    kl = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true")
    resp = post(kl, [f"{url}/sized/100?name=猫 cat"])
    assert resp.status_code == 200, resp.text[:500]
    assert seen.counts["requests"] == 1
