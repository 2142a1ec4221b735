"""The pooled upstream HTTP client, against real local servers (pytest-tornado drives the loop)."""
from __future__ import annotations

import asyncio
import socket

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from server.upstream.http import (
    ConnectFailed,
    ConnectionBroken,
    ForbiddenAddress,
    HttpClient,
    HttpTimeout,
    Origin,
    ResponseTooLarge,
    _forbidden_ip,
)


class Counting(HTTPServer):
    def initialize(self, *a, **kw):
        super().initialize(*a, **kw)
        self.accepted = 0
        self.closed_early = 0

    def handle_stream(self, stream, address):
        self.accepted += 1
        super().handle_stream(stream, address)


class Echo(tornado.web.RequestHandler):
    def post(self):
        self.write(b"echo:" + self.request.body)

    def get(self):
        self.write("ok")


class Chunks(tornado.web.RequestHandler):
    async def get(self):
        for i in range(3):
            self.write(f"piece{i};")
            await self.flush()
            await asyncio.sleep(0.05)


class Slow(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(5)
        self.write("late")

    def on_connection_close(self):
        self.settings["server"].closed_early += 1


class Silent(tornado.web.RequestHandler):
    async def get(self):
        self.write("first;")
        await self.flush()
        await asyncio.sleep(5)


class Big(tornado.web.RequestHandler):
    def get(self):
        self.write(b"x" * 100_000)


class CloseAfter(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Connection", "close")
        self.write("bye")


async def start(**extra):
    app = tornado.web.Application([(r"/echo", Echo), (r"/chunks", Chunks), (r"/slow", Slow), (r"/silent", Silent),
                                   (r"/big", Big), (r"/close", CloseAfter)], log_function=lambda h: None)
    server = Counting(app, **extra)
    app.settings["server"] = server
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    return server, Origin("http", "127.0.0.1", sockets[0].getsockname()[1])


@pytest.mark.gen_test
async def test_sequential_requests_reuse_one_connection():
    server, origin = await start()
    client = HttpClient()
    for i in range(20):
        resp = await client.request("POST", origin, "/echo", body=f"n{i}".encode(), timeout=5)
        assert resp.status == 200 and resp.body == f"echo:n{i}".encode()
    assert server.accepted == 1 and client.connections_opened == 1
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_concurrent_requests_open_parallel_connections_then_reuse_them():
    server, origin = await start()
    client = HttpClient()
    await asyncio.gather(*(client.request("GET", origin, "/echo", timeout=5) for _ in range(5)))
    assert server.accepted == 5
    await asyncio.gather(*(client.request("GET", origin, "/echo", timeout=5) for _ in range(5)))
    assert server.accepted == 5
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_chunked_body_is_streamed_piece_by_piece():
    server, origin = await start()
    client = HttpClient()
    resp = await client.open("GET", origin, "/chunks", timeout=5)
    assert resp.headers["transfer-encoding"] == "chunked"
    pieces = [p async for p in resp.iter_body(idle_timeout=2)]
    assert b"".join(pieces) == b"piece0;piece1;piece2;"
    assert len(pieces) == 3
    resp2 = await client.request("GET", origin, "/echo", timeout=5)
    assert resp2.body == b"ok" and server.accepted == 1  # the chunked response left the connection reusable
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_whole_request_timeout():
    server, origin = await start()
    client = HttpClient()
    with pytest.raises(HttpTimeout):
        await client.request("GET", origin, "/slow", timeout=0.2)
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_stream_idle_timeout():
    server, origin = await start()
    client = HttpClient()
    resp = await client.open("GET", origin, "/silent", timeout=5)
    got = []
    with pytest.raises(HttpTimeout):
        async for piece in resp.iter_body(idle_timeout=0.2):
            got.append(piece)
    assert got == [b"first;"]
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_cancelling_a_request_closes_its_connection_and_it_is_not_reused():
    server, origin = await start()
    client = HttpClient()
    task = asyncio.ensure_future(client.request("GET", origin, "/slow", timeout=10))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if server.closed_early:
            break
        await asyncio.sleep(0.01)
    assert server.closed_early == 1  # the upstream saw the cancellation
    assert client.idle_connections() == 0
    resp = await client.request("GET", origin, "/echo", timeout=5)
    assert resp.body == b"ok" and server.accepted == 2
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_a_connection_the_server_closed_while_idle_is_not_reused():
    server, origin = await start(idle_connection_timeout=0.1)
    client = HttpClient()
    assert (await client.request("GET", origin, "/echo", timeout=5)).body == b"ok"
    await asyncio.sleep(0.3)  # the server drops the idle keep-alive connection; we notice the close
    assert (await client.request("GET", origin, "/echo", timeout=5)).body == b"ok"
    assert server.accepted == 2
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_connection_close_header_is_honoured():
    server, origin = await start()
    client = HttpClient()
    await client.request("GET", origin, "/close", timeout=5)
    await client.request("GET", origin, "/close", timeout=5)
    assert server.accepted == 2 and client.idle_connections() == 0
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_response_size_limit():
    server, origin = await start()
    client = HttpClient()
    with pytest.raises(ResponseTooLarge):
        await client.request("GET", origin, "/big", timeout=5, limit=10_000)
    assert len((await client.request("GET", origin, "/big", timeout=5, limit=200_000)).body) == 100_000
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_private_addresses_refused_when_asked():
    server, origin = await start()
    client = HttpClient()
    with pytest.raises(ForbiddenAddress):
        await client.request("GET", origin, "/echo", timeout=5, allow_private=False)
    with pytest.raises(ForbiddenAddress):
        await client.request("GET", Origin("http", "localhost", origin.port), "/echo", timeout=5, allow_private=False)
    await client.close()
    server.stop()


@pytest.mark.gen_test
async def test_connect_failure_and_non_http_answers():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    client = HttpClient(connect_timeout=2)
    with pytest.raises(ConnectFailed):
        await client.request("GET", Origin("http", "127.0.0.1", port), "/", timeout=5)

    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(garbage, "127.0.0.1", 0)
    gport = srv.sockets[0].getsockname()[1]
    with pytest.raises(ConnectionBroken):
        await client.request("GET", Origin("http", "127.0.0.1", gport), "/", timeout=5)

    async def hangup(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    srv2 = await asyncio.start_server(hangup, "127.0.0.1", 0)
    hport = srv2.sockets[0].getsockname()[1]
    with pytest.raises(ConnectionBroken):
        await client.request("GET", Origin("http", "127.0.0.1", hport), "/", timeout=5)
    srv.close()
    srv2.close()
    await client.close()


def test_origin_parse():
    o, target = Origin.parse("https://generativelanguage.googleapis.com/v1beta/models?pageSize=5")
    assert o == Origin("https", "generativelanguage.googleapis.com", 443) and target == "/v1beta/models?pageSize=5"
    assert o.host_header == "generativelanguage.googleapis.com"
    o, target = Origin.parse("http://127.0.0.1:8099")
    assert o.host_header == "127.0.0.1:8099" and target == "/"
    with pytest.raises(ValueError):
        Origin.parse("ftp://x")


def test_only_globally_routable_addresses_are_allowed():
    refused = ["100.64.0.1",  # carrier-grade NAT, some clouds' metadata service
               "169.254.169.254", "127.0.0.1", "10.1.2.3", "192.168.1.1", "0.0.0.0", "224.0.0.1", "240.0.0.1",
               "192.0.2.1", "255.255.255.255",
               "::1", "::", "fe80::1", "fc00::1", "fec0::1", "ff02::1", "2001:db8::1",
               "::ffff:127.0.0.1", "::127.0.0.1",  # mapped, compatible
               "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
               "64:ff9b::a00:1", "64:ff9b:1::a00:1",  # NAT64 of 10.0.0.1
               "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo: its client is 192.0.2.45 (documentation)
               "not an address"]
    allowed = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
               "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"]
    assert [ip for ip in refused if not _forbidden_ip(ip)] == []
    assert [ip for ip in allowed if _forbidden_ip(ip)] == []


@pytest.fixture
def lookups(monkeypatch):
    """Host names looked up; every lookup fails at once, so nothing is resolved or contacted."""
    seen = []

    def guard(host, *args, **kw):
        seen.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "no lookups in this test")

    monkeypatch.setattr(socket, "getaddrinfo", guard)
    return seen


@pytest.mark.gen_test
async def test_literal_addresses_are_judged_before_any_lookup(lookups):
    client = HttpClient(connect_timeout=2)
    for host in ("100.64.0.1", "fec0::1", "64:ff9b::a00:1", "2002:c0a8:101::1"):
        with pytest.raises(ForbiddenAddress):
            await client.request("GET", Origin("http", host, 80), "/", timeout=5, allow_private=False)
    assert lookups == [] and client.connections_opened == 0
    await client.close()


def test_origin_parse_encodes_host_and_target_for_the_wire():
    o, target = Origin.parse("http://B\u00fccher.de/\u732b cat.png?q=\u00fc&r=%41")
    assert o.host == "xn--bcher-kva.de" and o.host_header == "xn--bcher-kva.de"
    assert target == "/%E7%8C%AB%20cat.png?q=%C3%BC&r=%41"
    for url in ("http://exa\uff0emple.com/", "http://\u0661\u0662\u0663.com/", "http://\uff11\uff12\uff17.0.0.1/",
                "http://" + "a" * 64 + ".com/", "http://a..b/"):
        with pytest.raises(ValueError, match="host name"):
            Origin.parse(url)
