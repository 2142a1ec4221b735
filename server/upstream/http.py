"""A small pooled HTTP/1.1 client for upstream calls.

Why not Tornado's AsyncHTTPClient: its simple client opens a new TCP (and TLS)
connection for every request, and neither of its clients can cancel a request
that is under way. Keyloom talks to a handful of origins many times a second,
must drop the upstream call the moment its client hangs up, and streams bodies
through. So: one keep-alive pool per origin, a request cancelled by cancelling
its task (the socket is closed, never reused half-read), bodies readable whole
or as they arrive, and hard caps on what an upstream can make us hold.

Each connection is one asyncio Protocol that parses the response as bytes
arrive (no stream reader/writer pair, no future per read): this is on every
request's path, so it is kept lean.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import ipaddress
import re
import socket
import ssl
import time
import unicodedata
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from python_socks import ProxyError as SocksRefused
from python_socks import ProxyType
from python_socks.async_.asyncio import Proxy as SocksConnector

MAX_HEAD_BYTES = 64 * 1024
PAUSE_AT = 1024 * 1024  # stop reading a streamed body while this much waits for its consumer


class HttpError(Exception):
    """A transport failure: no usable HTTP response came back."""


class ConnectFailed(HttpError):
    pass


class ProxyFailed(ConnectFailed):
    """The proxy itself failed: it could not be reached, refused our credentials, timed out or would not open the
    tunnel. The origin has not seen the request (nothing went out, or the proxy turned it away with a 407), so it
    may be sent again through another proxy; and it says nothing about the key the request carried."""


class HttpTimeout(HttpError):
    pass


class ConnectionBroken(HttpError):
    """The connection closed or sent something that is not HTTP/1.x."""


class ResponseTooLarge(HttpError):
    pass


class ForbiddenAddress(HttpError):
    """The host resolves to an address we were told not to call (private, loopback…)."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> tuple[Origin, str]:
        """Split a URL into its origin and request target (path + query), both ASCII as they go on the wire.

        ValueError, with a short message that does not repeat the URL, if it is not an http(s) URL, its port is not
        valid or its host name cannot be encoded (see `_ascii_host`)."""
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ValueError("not an http(s) URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError("its port is not valid") from None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if not target.isascii() or " " in target:  # as a browser does; the request line is ASCII
            target = _UNSAFE_IN_TARGET.sub(lambda m: quote(m.group(), safe=""), target)
        return cls(parts.scheme, _ascii_host(parts.hostname), port), target


_UNSAFE_IN_TARGET = re.compile(r"[^\x21-\x7e]+")


def _ascii_host(host: str) -> str:
    """The host name as DNS, the Host header and TLS see it: ASCII, an internationalized label in punycode.

    ValueError for a name IDNA cannot encode (an empty or over-long label), and for one it would encode only by
    rewriting it, so that the name looked up is not the name that was written: compatibility forms (a fullwidth
    dot U+FF0E, fullwidth digits: "\uff11\uff12\uff17.0.0.1" would become 127.0.0.1) and a right-to-left label
    that begins with a digit ("\u0661\u0662\u0663.com": IDNA 2008 refuses it, RFC 5893's first rule). The
    message does not repeat the name, which may be long.
    """
    try:
        if not host.isascii():
            for label in host.split("."):
                _check_idn_label(label)
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("its host name cannot be encoded (IDNA)") from None


def _check_idn_label(label: str) -> None:
    if unicodedata.normalize("NFKC", label) != label:
        raise UnicodeError("compatibility characters")
    directions = [unicodedata.bidirectional(c) for c in label]
    if any(d in ("R", "AL", "AN") for d in directions) and directions[0] not in ("R", "AL"):
        raise UnicodeError("a right-to-left label must begin with a letter")


_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")  # deprecated, still routed inside some networks
_LAST_32_BITS = (ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated)
                 ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))  # NAT64


def _forbidden_ip(ip: str) -> bool:
    """True unless `ip` is a globally routable unicast address.

    Refused: private, shared (100.64.0.0/10: carrier-grade NAT, some clouds' metadata), loopback, link-local,
    site-local, multicast, reserved, unspecified and documentation addresses; and an IPv6 address whose traffic
    ends at an IPv4 address that is one of those (mapped, compatible, 6to4, Teredo, NAT64). Anything that is not
    an address is refused too: it cannot be judged.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_ipv4(addr)
        if inner:
            return any(_not_routable(a) for a in inner)
        if addr in _SITE_LOCAL:
            return True
    return _not_routable(addr)


def _not_routable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not addr.is_global or addr.is_multicast or addr.is_reserved


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address stands for; for Teredo both its server and its client."""
    if addr.ipv4_mapped is not None:
        return (addr.ipv4_mapped,)
    if addr.sixtofour is not None:
        return (addr.sixtofour,)
    if addr.teredo is not None:
        return addr.teredo
    if any(addr in net for net in _LAST_32_BITS):
        return (ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF),)
    return ()


async def _public_address(host: str, port: int) -> str:
    """The address to connect to for `host`: ForbiddenAddress unless every address it has is globally routable.

    A literal address is judged as it is, before any lookup. A name is looked up once and the connection goes
    to an address that was judged, so a second answer (DNS rebinding) cannot slip a private one in.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if _forbidden_ip(host):
            raise ForbiddenAddress(f"{host} is a private or local address")
        return host
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:  # an Origin made without parse(): the name cannot be encoded
        raise ConnectFailed("the host name cannot be encoded (IDNA)") from None
    ips = [str(i[4][0]) for i in infos]
    if not ips or any(_forbidden_ip(ip) for ip in ips):
        raise ForbiddenAddress(f"{host} resolves to a private or local address")
    return ips[0]


@dataclass(frozen=True)
class Proxy:
    """A forward proxy from a URL `scheme://[user:password@]host[:port]`: where it is, the header line that
    authenticates us to an HTTP proxy (empty without credentials, or for SOCKS), the credentials as given (SOCKS5
    sends them in its own handshake) and the URL as it may be shown (password masked).

    Schemes: http:// and https:// (an HTTP proxy, over TLS for https://; CONNECT tunnels), socks5:// (the name
    of the origin is looked up here and the proxy is given its address) and socks5h:// (the proxy looks it up)."""

    origin: Origin
    authorization: str = field(repr=False)
    shown: str
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """ValueError, with a message that never repeats the URL (it may hold a password), unless `url` is an
        http://, https://, socks5:// or socks5h:// proxy URL with a host. The user name and password are
        percent-decoded."""
        bad_port = "its port is not valid (percent-encode any of :/?#@ in the user name or password)"
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            raise ValueError("not a proxy URL such as http://user:password@host:port") from None
        scheme = parts.scheme.lower()
        if scheme.startswith("socks") and scheme not in SOCKS_SCHEMES:
            raise ValueError(f"{scheme}:// proxies are not supported: use socks5:// or socks5h://")
        if scheme not in ("http", "https", *SOCKS_SCHEMES) or not parts.hostname:
            raise ValueError("expected an http:// or https:// (or socks5:// or socks5h://) proxy URL with a host, "
                             "such as http://host:port")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(bad_port) from None
        if port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(bad_port if port == 0 else "a proxy URL has no path, query or fragment "
                             "(percent-encode any of /?# in the user name or password)")
        host = _ascii_host(parts.hostname)
        if not _PROXY_HOST.fullmatch(host):
            raise ValueError("its host name is not valid")
        default_port = 1080 if scheme in SOCKS_SCHEMES else 443 if scheme == "https" else 80
        origin = Origin(scheme, host, port or default_port)
        authority = f"[{host}]:{origin.port}" if ":" in host else f"{host}:{origin.port}"
        if parts.username is None:
            return cls(origin, "", f"{scheme}://{authority}")
        user, password = unquote(parts.username), unquote(parts.password or "")
        if scheme in SOCKS_SCHEMES and (len(user.encode()) > 255 or len(password.encode()) > 255):
            raise ValueError("a SOCKS5 user name or password is at most 255 bytes")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        shown = f"{scheme}://{quote(user, safe='')}{':***' if password else ''}@{authority}"
        header = "" if scheme in SOCKS_SCHEMES else f"Proxy-Authorization: Basic {token}\r\n"
        return cls(origin, header, shown, user, password)

    @property
    def socks(self) -> bool:
        return self.origin.scheme in SOCKS_SCHEMES

    @property
    def masked(self) -> str:
        """scheme://host:port: the proxy as a page shows it, with no credentials at all (not even the user)."""
        host = f"[{self.origin.host}]" if ":" in self.origin.host else self.origin.host
        return f"{self.origin.scheme}://{host}:{self.origin.port}"

    @property
    def identity(self) -> str:
        """What tells this proxy from another: scheme, user name, host and port, never the password (so that a
        changed password keeps a proxy's keys; providers that route by user name on one gateway stay apart)."""
        return f"{self.origin.scheme}://{quote(self.username, safe='')}@{self.masked.split('://', 1)[1]}"

    def secrets(self) -> list[str]:
        """What the redactor must hide: the password, as given and as it travels (percent-encoded, Basic)."""
        if not self.password:
            return []
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return [self.password, quote(self.password, safe=""), token]

    def __str__(self) -> str:
        return self.shown


SOCKS_SCHEMES = ("socks5", "socks5h")


_PROXY_HOST = re.compile(r"[A-Za-z0-9._:-]+")


# body framing of the response being read
_NONE, _LENGTH, _CHUNKED, _EOF = range(4)


class _Conn(asyncio.Protocol):
    """One upstream connection, one request at a time; parses the response as bytes arrive."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buf = bytearray()
        self._resp: Response | None = None
        self._head_waiter: asyncio.Future[None] | None = None
        self._in_head = False
        self._framing = _NONE
        self._remaining = 0
        self._chunk_trailer = False
        self._paused = False

    # -- asyncio callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self._resp
        if resp is None:
            return
        if self._in_head:
            self._fail(ConnectionBroken("upstream closed the connection before answering" if not self._buf
                                        else "upstream sent an incomplete response head"))
        elif self._framing == _EOF:
            self._finish()
        elif not resp.complete:
            self._fail(ConnectionBroken("upstream closed the connection before the body ended"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:  # request bodies are bounded; the transport buffers them
        pass

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        resp = self._resp
        if resp is None or resp.complete:
            self.abort()  # bytes nobody asked for: this connection cannot be trusted any more
            return
        if self._in_head:
            buf = self._buf
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(ConnectionBroken("upstream response head is too large"))
                return
            try:
                interim = self._parse_head(bytes(buf[:end]))
            except HttpError as e:
                self._fail(e)
                return
            rest = bytes(buf[end + 4:])
            buf.clear()
            if interim:  # 100 Continue, 103 Early Hints: the real head follows
                if rest:
                    self.data_received(rest)
                return
            self._in_head = False
            waiter = self._head_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if self._framing == _NONE:
                self._finish()
                return
            if not rest:
                return
            data = rest
        if self._framing == _LENGTH:
            if len(data) > self._remaining:
                self._fail(ConnectionBroken("upstream sent more than its Content-Length"))
                return
            self._remaining -= len(data)
            self._deliver(data)
            if self._remaining == 0:
                self._finish()
        elif self._framing == _CHUNKED:
            self._chunked(data)
        else:
            self._deliver(data)

    # -- parsing -------------------------------------------------------------------------------------

    def _parse_head(self, raw: bytes) -> bool:
        """Parse a response head into the current Response; True for an interim (1xx) head."""
        try:
            text = raw.decode("latin-1")
            status_line, _, rest = text.partition("\r\n")
            version, status_s = status_line.split(" ", 2)[:2]
            status = int(status_s)
            if not version.startswith("HTTP/1."):
                raise ValueError
        except ValueError:
            raise ConnectionBroken("upstream answered with something that is not HTTP/1.x") from None
        if 100 <= status < 200 and status != 101:
            return True
        headers: dict[str, str] = {}
        for line in rest.split("\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ConnectionBroken("malformed header line from upstream")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        resp = self._resp
        assert resp is not None
        resp.status = status
        resp.headers = headers
        resp.keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if resp.method in ("HEAD", "CONNECT") or status in (204, 304):
            self._framing = _NONE
        elif headers.get("transfer-encoding", "").lower().endswith("chunked"):
            self._framing = _CHUNKED
            self._chunk_trailer = False
            self._remaining = -1  # next thing is a size line
        elif "content-length" in headers:
            try:
                self._remaining = int(headers["content-length"])
            except ValueError:
                raise ConnectionBroken("invalid Content-Length from upstream") from None
            self._framing = _LENGTH if self._remaining > 0 else _NONE
            if resp.limit is not None and self._remaining > resp.limit:
                raise ResponseTooLarge(f"upstream response larger than {resp.limit} bytes")
        else:
            self._framing = _EOF
            resp.keep_alive = False
        return False

    def _chunked(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while buf:
            if self._remaining > 0:  # inside a chunk's data
                take = min(self._remaining, len(buf))
                piece = bytes(buf[:take])
                del buf[:take]
                self._remaining -= take
                self._deliver(piece)
                if self._resp is None or self._resp.error is not None:
                    return
                if self._remaining == 0:
                    self._remaining = -2  # expect the CRLF after the data
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(ConnectionBroken("malformed chunked body from upstream"))
                return
            line = bytes(buf[:end])
            del buf[:end + 2]
            if self._remaining == -2:
                if line:
                    self._fail(ConnectionBroken("improperly terminated chunk from upstream"))
                    return
                self._remaining = -1
            elif self._chunk_trailer:
                if not line:  # the blank line after the trailers: done
                    self._finish()
                    return
            else:
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._fail(ConnectionBroken("invalid chunk size from upstream"))
                    return
                if size == 0:
                    self._chunk_trailer = True
                else:
                    self._remaining = size

    def _deliver(self, piece: bytes) -> None:
        resp = self._resp
        assert resp is not None
        resp.received += len(piece)
        if resp.limit is not None and resp.received > resp.limit:
            self._fail(ResponseTooLarge(f"upstream response larger than {resp.limit} bytes"))
            return
        resp._pieces.append(piece)
        resp._buffered += len(piece)
        if resp._streaming:
            resp._wake()
            if resp._buffered > PAUSE_AT and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def _finish(self) -> None:
        resp = self._resp
        if resp is None or resp.complete:
            return
        resp.complete = True
        resp._wake()
        if self._buf:
            resp.keep_alive = False  # bytes past the end of the response: do not reuse

    def _fail(self, error: HttpError) -> None:
        resp = self._resp
        self.abort()
        if resp is None:
            return
        if resp.error is None and not resp.complete:
            resp.error = error
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        resp._wake()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # -- sending -------------------------------------------------------------------------------------

    def start(self, resp: Response, payload: bytes, body: bytes) -> asyncio.Future[None]:
        self._resp = resp
        self._in_head = True
        self._buf.clear()
        self._framing = _NONE
        self._paused = False
        self._head_waiter = waiter = self.loop.create_future()
        assert self.transport is not None
        self.transport.write(payload)
        if body:
            self.transport.write(body)
        return waiter


class Response:
    """An upstream response: status and headers, then the body, whole (`body`) or piece by piece."""

    def __init__(self, client: HttpClient | None, origin: Origin, conn: _Conn, method: str, limit: int | None):
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.method = method
        self.limit = limit
        self.received = 0
        self.complete = False
        self.error: HttpError | None = None
        self.body = b""
        self._client = client
        self._origin = origin
        self._conn: _Conn | None = conn
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._streaming = False

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.keep_alive and self._client is not None and not conn.closed:
            conn._resp = None
            self._client._release(self._origin, conn)
        else:
            conn.abort()

    async def _wait(self, timeout: float | None) -> None:
        conn = self._conn
        loop = conn.loop if conn is not None else asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        handle = loop.call_later(timeout, waiter.cancel) if timeout is not None else None
        try:
            await waiter
        except asyncio.CancelledError:
            if handle is not None and waiter.cancelled() and not _task_cancelling():
                raise HttpTimeout(f"upstream sent nothing for {timeout:g}s") from None
            raise
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None

    async def iter_body(self, idle_timeout: float | None = None,
                        limit: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield body pieces as they arrive; each wait is bounded by idle_timeout."""
        if limit is not None:
            self.limit = limit if self.limit is None else min(self.limit, limit)
        self._streaming = True
        try:
            while True:
                if self._pieces:
                    piece = self._pieces.popleft()
                    self._buffered -= len(piece)
                    if self._conn is not None and self._buffered < PAUSE_AT // 2:
                        self._conn.resume()
                    yield piece
                    continue
                if self.error is not None:
                    raise self.error
                if self.complete:
                    break
                await self._wait(idle_timeout)
        except BaseException:
            self.close()
            raise
        self._release()

    async def read(self, idle_timeout: float | None = None, limit: int | None = None) -> bytes:
        pieces = [p async for p in self.iter_body(idle_timeout, limit)]
        self.body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return self.body

    def close(self) -> None:
        """Drop the connection (used when the body will not be read to its end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


def _task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class HttpClient:
    def __init__(self, *, connect_timeout: float = 10.0, proxy: str = "", max_idle_per_origin: int = 64,
                 idle_ttl: float = 45.0, ssl_context: ssl.SSLContext | None = None):
        self.connect_timeout = connect_timeout
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_ttl = idle_ttl
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Conn]] = {}
        # ValueError (the message never repeats the password) for a proxy URL this client cannot use
        self.proxy = Proxy.parse(proxy) if proxy else None
        self._proxy = self.proxy.origin if self.proxy is not None else None
        self._proxy_auth = self.proxy.authorization if self.proxy is not None else ""
        self._http_proxy = self.proxy is not None and not self.proxy.socks  # plain http goes in absolute form
        self.connections_opened = 0
        self.requests_sent = 0

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def close(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                c.abort()
        self._idle.clear()

    # -- connections ---------------------------------------------------------------------------------

    def _checkout(self, origin: Origin) -> _Conn | None:
        conns = self._idle.get(origin)
        if not conns:
            return None
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < self.idle_ttl:
                return conn
            conn.abort()
        return None

    def _release(self, origin: Origin, conn: _Conn) -> None:
        conns = self._idle.setdefault(origin, [])
        if len(conns) >= self.max_idle_per_origin:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)

    async def _open(self, origin: Origin, allow_private: bool) -> _Conn:
        loop = asyncio.get_running_loop()
        host, port = origin.host, origin.port
        proxy = self._proxy
        where = origin.host  # what a failure names: the origin, or the proxy while we are talking to it
        at_proxy = False  # a failure now is the proxy's (ProxyFailed): nothing of the request has gone out
        conn: _Conn | None = None
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if not allow_private:
                    host = await _public_address(host, port)
                if self.proxy is not None and self.proxy.socks:
                    where, at_proxy = f"the proxy {self.proxy}", True
                    # the tunnel goes to the address judged above when there was one (as for CONNECT below)
                    sock = await self._socks(self.proxy, host, port, loop)
                    where, at_proxy = origin.host, False
                    if origin.tls:
                        _, conn = await loop.create_connection(_Conn, sock=sock, ssl=self.ssl_context,
                                                               server_hostname=origin.host)
                    else:
                        _, conn = await loop.create_connection(_Conn, sock=sock)
                elif proxy is not None:
                    where, at_proxy = f"the proxy {self.proxy}", True
                    if proxy.tls:  # TLS to the proxy itself; a tunnel inside it is TLS in TLS
                        _, conn = await loop.create_connection(_Conn, proxy.host, proxy.port, ssl=self.ssl_context,
                                                               server_hostname=proxy.host)
                    else:
                        _, conn = await loop.create_connection(_Conn, proxy.host, proxy.port)
                    if origin.tls:
                        # the tunnel goes to the address judged above when there was one, so that the proxy's
                        # own lookup cannot swap in another; TLS still checks the certificate against the name
                        await self._tunnel(conn, origin, host)
                        where, at_proxy = origin.host, False
                        tls = await loop.start_tls(conn.transport, conn, self.ssl_context,  # type: ignore[arg-type]
                                                   server_hostname=origin.host)
                        conn.transport = tls
                elif origin.tls:
                    _, conn = await loop.create_connection(_Conn, host, port, ssl=self.ssl_context,
                                                           server_hostname=origin.host)
                else:
                    _, conn = await loop.create_connection(_Conn, host, port)
        except BaseException as e:
            if conn is not None:
                conn.abort()
            elif sock is not None:
                sock.close()
            failed = ProxyFailed if at_proxy else ConnectFailed
            if isinstance(e, TimeoutError):
                if at_proxy:
                    raise ProxyFailed(f"could not connect to {where} within {self.connect_timeout:g}s") from None
                raise HttpTimeout(f"could not connect to {where} within {self.connect_timeout:g}s") from None
            if isinstance(e, (OSError, ssl.SSLError)):
                raise failed(f"could not connect to {where}: {type(e).__name__}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
            if isinstance(e, SocksRefused):  # the SOCKS5 handshake: credentials refused, or no tunnel
                raise ProxyFailed(f"{where} refused: {e}") from None
            if at_proxy and isinstance(e, HttpError) and not isinstance(e, ProxyFailed):  # CONNECT went wrong
                raise ProxyFailed(f"{where} failed: {e}") from None
            raise
        sock_ = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        if sock_ is not None:
            try:
                sock_.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.connections_opened += 1
        return conn

    async def _socks(self, proxy: Proxy, host: str, port: int, loop: asyncio.AbstractEventLoop) -> socket.socket:
        """A socket connected through a SOCKS5 proxy to host:port (python-socks speaks the protocol: greeting,
        RFC 1929 user/password, CONNECT). socks5h:// hands the proxy the name, socks5:// an address looked up here."""
        connector = SocksConnector(ProxyType.SOCKS5, proxy.origin.host, proxy.origin.port,
                                   username=proxy.username or None, password=proxy.password or None,
                                   rdns=proxy.origin.scheme == "socks5h", loop=loop)
        sock: socket.socket = await connector.connect(host, port, timeout=self.connect_timeout)
        return sock

    async def _tunnel(self, conn: _Conn, origin: Origin, host: str) -> None:
        """CONNECT through the proxy to `host` (the origin's name, or the address it was judged by)."""
        authority = f"[{host}]:{origin.port}" if ":" in host else f"{host}:{origin.port}"
        resp = Response(None, origin, conn, "CONNECT", 0)
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{self._proxy_auth}\r\n"
        await conn.start(resp, head.encode("latin-1"), b"")
        if not 200 <= resp.status < 300:  # any 2xx opens the tunnel (RFC 9110 9.3.6)
            conn.abort()
            if resp.status == 407:
                raise _proxy_auth_failed(bool(self._proxy_auth))
            raise ProxyFailed(f"the proxy refused to tunnel to {origin.host} (status {resp.status})")
        conn._resp = None

    # -- requests ------------------------------------------------------------------------------------

    async def request(self, method: str, origin: Origin, target: str, *, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"", timeout: float = 300.0, limit: int | None = None,
                      allow_private: bool = True) -> Response:
        """Send a request and read the whole response body (bounded by `timeout` overall)."""
        try:
            async with asyncio.timeout(timeout):
                resp = await self._send(method, origin, target, headers, body, allow_private, limit)
                await resp.read(None, limit)
                return resp
        except TimeoutError:
            raise HttpTimeout(f"no complete answer from {origin.host} within {timeout:g}s") from None

    async def open(self, method: str, origin: Origin, target: str, *, headers: Iterable[tuple[str, str]] = (),
                   body: bytes = b"", timeout: float = 300.0, allow_private: bool = True) -> Response:
        """Send a request and return once the response head has arrived; read the body from the Response."""
        try:
            async with asyncio.timeout(timeout):
                return await self._send(method, origin, target, headers, body, allow_private, None)
        except TimeoutError:
            raise HttpTimeout(f"no answer from {origin.host} within {timeout:g}s") from None

    async def _send(self, method: str, origin: Origin, target: str, headers: Iterable[tuple[str, str]],
                    body: bytes, allow_private: bool, limit: int | None) -> Response:
        lines = [self._target(method, origin, target)]
        for k, v in headers:
            lines.append(f"{k}: {v}\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        payload, rest = (head + body, b"") if len(body) < 65536 else (head, body)
        # No silent retry when a pooled connection fails under us: the server may have read the request,
        # and the caller (which counts attempts per key) decides whether and where to try again.
        conn = self._checkout(origin) if allow_private else None
        if conn is None:
            conn = await self._open(origin, allow_private)
        resp = Response(self, origin, conn, method, limit)
        try:
            await conn.start(resp, payload, rest)
        except BaseException:
            conn.abort()
            raise
        self.requests_sent += 1
        if resp.status == 407 and self._http_proxy and not origin.tls:  # the proxy's answer, not the origin's
            resp.close()
            raise _proxy_auth_failed(bool(self._proxy_auth))
        return resp

    def _target(self, method: str, origin: Origin, target: str) -> str:
        """The request line and Host header; through a proxy, a plain-http request names its origin in full
        (absolute form) and carries the proxy's credentials (an https one goes through a CONNECT tunnel; through
        SOCKS every request is as it would be sent direct)."""
        if self._http_proxy and not origin.tls:
            return (f"{method} http://{origin.host_header}{target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"
                    f"{self._proxy_auth}")
        return f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"


def _proxy_auth_failed(had_credentials: bool) -> ProxyFailed:
    return ProxyFailed("the proxy refused the credentials (407)" if had_credentials else
                         "the proxy asks for credentials (407): give them in the proxy URL, http://user:password@host:port")
