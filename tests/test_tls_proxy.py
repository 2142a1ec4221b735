"""The production path to Google: TLS with certificate and SNI checks, keep-alive over TLS, and an
HTTP proxy (CONNECT tunnel for https, absolute-form for http) when UPSTREAM_PROXY is set."""
from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from server.upstream.gemini import GeminiClient
from server.upstream.http import ConnectFailed, HttpClient, Origin
from tests.fake_gemini import FakeGemini
from tests.support.proxies import pipe_both


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


class Proxy:
    """A minimal forward proxy: CONNECT tunnels and absolute-form requests, counted."""

    def __init__(self):
        self.tunnels = []
        self.forwarded = []
        self.server = None
        self.handlers = set()

    async def stop(self):
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader, writer):
        self.handlers.add(asyncio.current_task())
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            self.tunnels.append(target)
            up_r, up_w = await asyncio.open_connection("127.0.0.1", int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            self.forwarded.append(target)
            origin = Origin.parse(target)[0]
            up_r, up_w = await asyncio.open_connection(origin.host, origin.port)
            path = target.split("/", 3)[3]
            up_w.write(head.replace(target.encode(), b"/" + path.encode(), 1))

        await pipe_both(reader, writer, up_r, up_w)


async def tls_fake(ca):
    fake = FakeGemini()
    fake.unknown_key = "ok"
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    base = await fake.start_tls(ctx)
    return fake, base


def client_ctx(ca):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.mark.gen_test(timeout=20)
async def test_tls_upstream_with_verified_certificate_and_keep_alive(ca):
    fake, base = await tls_fake(ca)
    http = HttpClient(ssl_context=client_ctx(ca))
    gemini = GeminiClient(http, base)
    for i in range(5):
        reply = await gemini.generate("AIzaKey", "gemini-2.0-flash",
                                      b'{"contents":[{"role":"user","parts":[{"text":"tls %d"}]}]}' % i)
        assert reply["candidates"][0]["content"]["parts"][-1]["text"] == f"Echo: tls {i}"
    events = [e async for e in gemini.stream("AIzaKey", "gemini-2.0-flash",
                                             b'{"contents":[{"role":"user","parts":[{"text":"s"}]}]}')]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert fake.connections == 1 and http.connections_opened == 1
    await http.close()
    await fake.stop()


@pytest.mark.gen_test(timeout=20)
async def test_untrusted_certificate_is_refused(ca):
    fake, base = await tls_fake(ca)
    http = HttpClient()  # system trust store: the test CA is not in it
    with pytest.raises(ConnectFailed):
        await http.request("GET", *Origin.parse(base + "/v1beta/models"), timeout=5)
    await fake.stop()


@pytest.mark.gen_test(timeout=20)
async def test_https_through_a_proxy_uses_one_connect_tunnel(ca):
    fake, base = await tls_fake(ca)
    proxy = Proxy()
    proxy_url = await proxy.start()
    http = HttpClient(ssl_context=client_ctx(ca), proxy=proxy_url)
    gemini = GeminiClient(http, base)
    for _ in range(3):
        await gemini.generate("AIzaKey", "gemini-2.0-flash", b'{"contents":[{"role":"user","parts":[{"text":"p"}]}]}')
    assert len(proxy.tunnels) == 1 and proxy.tunnels[0].startswith("localhost:")
    assert len(fake.generate_calls()) == 3
    await http.close()
    await proxy.stop()
    await fake.stop()


@pytest.mark.gen_test(timeout=20)
async def test_plain_http_through_a_proxy_uses_absolute_form(ca):
    fake = FakeGemini()
    fake.unknown_key = "ok"
    base = await fake.start()
    proxy = Proxy()
    http = HttpClient(proxy=await proxy.start())
    models = await GeminiClient(http, base).list_models("AIzaKey")
    assert len(models) == len(fake.models)
    assert proxy.forwarded and proxy.forwarded[0].startswith(base + "/v1beta/models")
    await http.close()
    await proxy.stop()
    await fake.stop()
