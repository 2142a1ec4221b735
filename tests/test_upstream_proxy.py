"""UPSTREAM_PROXY with credentials and over TLS, for every call Keyloom makes: the Gemini API over http and https
(absolute form and CONNECT, each with Proxy-Authorization), an https:// proxy (TLS to the proxy, then TLS to the
origin inside it, on asyncio's loop and on uvloop), Vertex AI's token refresh, image URLs; a 407 is a clear
error that never shows the password and disables no key; a proxy URL Keyloom cannot use stops the start.

The proxy is test_tls_proxy's, put behind Basic credentials (and TLS when asked); the start-up checks are
test_startup's."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import ssl
from urllib.parse import quote

import openai
import pytest
import trustme
import uvloop

from server.upstream.gemini import GeminiClient
from server.upstream.http import ConnectFailed, HttpClient, Origin
from tests.conftest import PASSWORD
from tests.fake_gemini import make_service_account
from tests.support.images import PNG, serving_images
from tests.support.proc import KeyloomProcess
from tests.test_startup import env_for, error_lines, fails_to_start
from tests.test_tls_proxy import Proxy, client_ctx, tls_fake

PROXY_USER = "keyloom bot"
PROXY_PASSWORD = "pr0xy:p@ss/w0rd#7"  # every character that must be percent-encoded in a URL's userinfo
WRONG_PASSWORD = "wr0ng-pr0xy-secret"
HI = [{"role": "user", "content": "hello proxy"}]
REFUSED = "the proxy refused the credentials (407)"


def with_credentials(base: str, user: str = PROXY_USER, password: str = PROXY_PASSWORD) -> str:
    scheme, _, authority = base.partition("://")
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{authority}"


def never_shown(text: str, password: str) -> None:
    """Neither the password nor anything that carries it (percent-encoded, inside the Basic token) is in `text`."""
    token = base64.b64encode(f"{PROXY_USER}:{password}".encode()).decode()
    for form in (password, quote(password, safe=""), token):
        assert form not in text


class _Replay:
    """The reader Proxy.handle reads from, after the head was read here: that head first, then the stream."""

    def __init__(self, head: bytes, reader: asyncio.StreamReader):
        self.head, self.reader = head, reader

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        head, self.head = self.head, b""
        return head

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(n)


class AuthProxy(Proxy):
    """test_tls_proxy's forward proxy behind Basic credentials (407 without the right ones), over TLS itself when
    given a server context. Like a real proxy it drops Proxy-Authorization before forwarding; a plain-http request
    goes on with `Connection: close` (Proxy pipes bytes after the first request, so one request per connection).
    `refused` holds the Proxy-Authorization values it turned away ("" when there was none)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        super().__init__()
        self.ssl_context = ssl_context
        self.expected = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
        self.refused: list[str] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.ssl_context)
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")  # ends with "", "": the blank line
        auth = next((line.split(":", 1)[1].strip() for line in lines[1:]
                     if line.lower().startswith("proxy-authorization:")), "")
        if auth != self.expected:
            self.refused.append(auth)
            writer.write(b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n'
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        kept = [line for line in lines if not line.lower().startswith(("proxy-authorization:", "connection:"))]
        if not lines[0].startswith("CONNECT "):
            kept.insert(len(kept) - 2, "Connection: close")
        await super().handle(_Replay("\r\n".join(kept).encode("latin-1"), reader), writer)


def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def trusted(ca, tmp_path, monkeypatch):
    """Keyloom trusts the test CA as an operator makes it trust a private one (a corporate proxy's): SSL_CERT_FILE,
    read when its HttpClient first needs TLS."""
    path = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


@pytest.fixture
def start_proxy(loop_thread, ca):
    started: list[AuthProxy] = []

    def start(tls: bool = False) -> tuple[AuthProxy, str]:
        proxy = AuthProxy(server_ctx(ca) if tls else None)
        base = loop_thread.run(proxy.start())
        started.append(proxy)
        return proxy, base

    yield start
    for p in started:
        loop_thread.run(p.stop())


@pytest.fixture
def tls_origin(loop_thread, ca):
    """A fake Gemini (and Vertex AI, token endpoint included) over TLS at https://localhost:port."""
    fake, _ = loop_thread.run(tls_fake(ca))
    yield fake
    loop_thread.run(fake.stop())


def upstream(origin_tls: bool, fake, tls_origin):
    return tls_origin if origin_tls else fake


def went_through(proxy: AuthProxy, upstream_fake, fragment: str) -> bool:
    """Did a call whose target contains `fragment` pass the proxy (absolute form), or did the proxy open a tunnel
    to that upstream (https: the path is inside TLS)?"""
    if upstream_fake.base_url.startswith("https://"):
        port = Origin.parse(upstream_fake.base_url)[0].port
        return f"localhost:{port}" in proxy.tunnels
    return any(t.startswith(upstream_fake.base_url) and fragment in t for t in proxy.forwarded)


# -- Gemini through an authenticated proxy, http or https, to an http or https origin ---------------------------

@pytest.mark.parametrize("proxy_tls", [False, True], ids=["http-proxy", "https-proxy"])
@pytest.mark.parametrize("origin_tls", [False, True], ids=["http-origin", "https-origin"])
def test_chat_completion_through_an_authenticated_proxy(start_keyloom, fake, tls_origin, start_proxy, trusted,
                                                        proxy_tls, origin_tls):
    proxy, base = start_proxy(tls=proxy_tls)
    up = upstream(origin_tls, fake, tls_origin)
    running = start_keyloom(GEMINI_BASE_URL=up.base_url, UPSTREAM_PROXY=with_credentials(base))
    before = len(up.generate_calls())
    for _ in range(2):
        out = running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
        assert out.choices[0].message.content == "Echo: hello proxy"
    assert len(up.generate_calls()) == before + 2
    assert went_through(proxy, up, ":generateContent") and proxy.refused == []
    if origin_tls:  # the start-up model list and both completions share one tunnel (keep-alive inside it)
        assert len(proxy.tunnels) == 1 and proxy.forwarded == []
    else:
        assert proxy.tunnels == [] and len([t for t in proxy.forwarded if ":generateContent" in t]) == 2


@pytest.mark.parametrize("origin_tls", [False, True], ids=["http-origin", "https-origin"])
def test_wrong_credentials_are_a_clear_error_that_never_shows_the_password(start_keyloom, fake, tls_origin,
                                                                          start_proxy, trusted, caplog, origin_tls):
    caplog.set_level(logging.DEBUG)
    proxy, base = start_proxy()
    up = upstream(origin_tls, fake, tls_origin)
    running = start_keyloom(GEMINI_BASE_URL=up.base_url, MAX_RETRY_NUM="1",
                            UPSTREAM_PROXY=with_credentials(base, password=WRONG_PASSWORD))
    before = len(up.generate_calls())
    with pytest.raises(openai.APIStatusError) as e:
        running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert REFUSED in e.value.message, e.value.message
    assert proxy.refused and proxy.refused[0].startswith("Basic ")  # credentials were sent, and refused
    assert len(up.generate_calls()) == before and proxy.tunnels == [] and proxy.forwarded == []
    assert all(k.disabled_reason is None for k in running.kl.pool.keys)  # the road is broken, not the keys
    with running.http(headers={"Authorization": f"Bearer {running.kl.admin_password}"}) as http:
        shown = http.get("/api/settings").text + http.get("/api/status").text + http.get("/api/requests").text
    for text in (e.value.message, json.dumps(e.value.body), caplog.text, shown):
        never_shown(text, WRONG_PASSWORD)


def test_the_proxy_password_is_masked_wherever_the_client_names_the_proxy():
    http = HttpClient(proxy="https://keyloom%20bot:s3cr%40t@proxy.example:8443")
    assert str(http.proxy) == "https://keyloom%20bot:***@proxy.example:8443"
    assert "s3cr" not in repr(http.proxy)

    async def through_a_closed_port() -> str:
        with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = HttpClient(proxy=with_credentials(f"http://127.0.0.1:{port}"))
        with pytest.raises(ConnectFailed) as e:
            await client.request("GET", *Origin.parse("http://example.com/"), timeout=10)
        return str(e.value)

    message = asyncio.run(through_a_closed_port())
    assert "could not connect to the proxy http://keyloom%20bot:***@127.0.0.1:" in message
    never_shown(message, PROXY_PASSWORD)


# -- TLS in TLS on both event loops Keyloom runs on ---------------------------------------------------------------

@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_tls_to_the_origin_inside_tls_to_an_https_proxy(ca, loop_factory):
    async def run() -> None:
        fake, base = await tls_fake(ca)
        proxy = AuthProxy(server_ctx(ca))
        http = HttpClient(ssl_context=client_ctx(ca), proxy=with_credentials(await proxy.start()))
        gemini = GeminiClient(http, base)
        try:
            for i in range(3):
                reply = await gemini.generate("AIzaKey", "gemini-2.0-flash",
                                              b'{"contents":[{"role":"user","parts":[{"text":"in tls %d"}]}]}' % i)
                assert reply["candidates"][0]["content"]["parts"][-1]["text"] == f"Echo: in tls {i}"
            events = [e async for e in gemini.stream("AIzaKey", "gemini-2.0-flash",
                                                     b'{"contents":[{"role":"user","parts":[{"text":"s"}]}]}')]
            assert events[-1]["candidates"][0]["finishReason"] == "STOP"
            assert proxy.tunnels == [f"localhost:{Origin.parse(base)[0].port}"] and proxy.refused == []
            assert http.connections_opened == 1 and fake.connections == 1
        finally:
            await http.close()
            await proxy.stop()
            await fake.stop()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())


# -- Vertex AI: the token refresh takes the proxy too ----------------------------------------------------------------

@pytest.mark.parametrize("proxy_tls, origin_tls", [(False, False), (True, True)],
                         ids=["http-proxy-http-origin", "https-proxy-https-origin"])
def test_vertex_token_refresh_goes_through_the_proxy(start_keyloom, fake, tls_origin, start_proxy, trusted,
                                                     proxy_tls, origin_tls):
    proxy, base = start_proxy(tls=proxy_tls)
    up = upstream(origin_tls, fake, tls_origin)
    sa = make_service_account(up, "proxied@proj-9.iam.gserviceaccount.com", "proj-9")
    running = start_keyloom(ENABLE_VERTEX="true", GOOGLE_CREDENTIALS_JSON=json.dumps([sa]), GEMINI_API_KEYS="",
                            VERTEX_BASE_URL=up.base_url, UPSTREAM_PROXY=with_credentials(base))
    out = running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert out.choices[0].message.content
    assert up.token_requests == 1
    assert went_through(proxy, up, "/token") and proxy.refused == []
    if not origin_tls:  # in absolute form each call is seen: the token request, then the generation
        assert [t for t in proxy.forwarded if t.endswith("/token")] == [f"{up.base_url}/token"]
        assert any("/projects/proj-9/" in t for t in proxy.forwarded)
    else:  # direct, the token endpoint would have been reached without the proxy
        assert proxy.tunnels


def test_a_proxy_refusing_the_token_refresh_disables_no_account(start_keyloom, fake, start_proxy, caplog):
    caplog.set_level(logging.DEBUG)
    proxy, base = start_proxy()
    sa = make_service_account(fake, "refused@proj-8.iam.gserviceaccount.com", "proj-8")
    running = start_keyloom(ENABLE_VERTEX="true", GOOGLE_CREDENTIALS_JSON=json.dumps([sa]), GEMINI_API_KEYS="",
                            VERTEX_BASE_URL=fake.base_url, MAX_RETRY_NUM="1",
                            UPSTREAM_PROXY=with_credentials(base, password=WRONG_PASSWORD))
    with pytest.raises(openai.APIStatusError) as e:
        running.client().chat.completions.create(model="gemini-2.5-flash", messages=HI)
    assert REFUSED in e.value.message, e.value.message
    assert fake.token_requests == 0 and proxy.refused
    key = next(k for k in running.kl.pool.keys if k.provider == "vertex")
    assert key.disabled_reason is None
    never_shown(e.value.message + caplog.text, WRONG_PASSWORD)


# -- image URLs a client gives: all egress takes the proxy ----------------------------------------------------------

@pytest.fixture
def image_server(loop_thread):
    with serving_images(loop_thread) as url:
        yield url


def test_image_urls_are_fetched_through_the_proxy(start_keyloom, fake, start_proxy, image_server):
    proxy, base = start_proxy()
    running = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true", UPSTREAM_PROXY=with_credentials(base))
    image = {"type": "image_url", "image_url": {"url": f"{image_server}/cat.png"}}
    running.client().chat.completions.create(model="gemini-2.5-flash", messages=[
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}])
    part = fake.generate_calls()[0].body["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}
    assert f"{image_server}/cat.png" in proxy.forwarded and proxy.refused == []


# -- a proxy URL Keyloom cannot use stops the start, naming UPSTREAM_PROXY and not the password -------------------

@pytest.mark.parametrize("url, reason", [
    ("socks4://bot:{}@127.0.0.1:1080", "socks4:// proxies are not supported"),  # socks5: test_proxies_per_key
    ("http://bot:{}@proxy.example", "needs its port"),
    ("https://bot:{}@proxy.example:99999", "port is not valid"),
    ("ftp://bot:{}@proxy.example:21", "http:// or https://"),
], ids=["socks4", "no-port", "bad-port", "ftp"])
def test_a_proxy_url_that_cannot_be_used_stops_the_start(fake, tmp_path, url, reason):
    url = url.format(quote(PROXY_PASSWORD, safe=""))
    code, out = fails_to_start(KeyloomProcess(env=env_for(fake, UPSTREAM_PROXY=url), data_dir=tmp_path))
    problems = [line for line in out.splitlines() if "UPSTREAM_PROXY" in line]
    assert code == 2 and error_lines(out) and len(problems) == 1 and reason in problems[0], out
    never_shown(out, PROXY_PASSWORD)
    assert PASSWORD not in out
