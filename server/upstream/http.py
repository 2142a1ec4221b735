"""A small pooled HTTP/1.1 client for upstream calls.

Why not Tornado's AsyncHTTPClient: its simple client opens a new TCP (and TLS)
connection for every request, and neither of its clients can cancel a request
that is under way. Keyloom talks to a handful of origins many times a second,
must drop the upstream call the moment its client hangs up, and streams bodies
through. So: one keep-alive pool per origin, a request cancelled by cancelling
its task (the socket is closed, never reused half-read), bodies readable whole
or as they arrive, and hard caps on what an upstream can make us hold.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import AsyncIterator, Iterable
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
READ_PIECE = 256 * 1024


class HttpError(Exception):
    """A transport failure: no usable HTTP response came back."""


class ConnectFailed(HttpError):
    pass


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
    def parse(cls, url: str) -> tuple["Origin", str]:
        """Split a URL into its origin and request target (path + query)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port), target


def _forbidden_ip(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
            or addr.is_reserved or addr.is_unspecified)


class _Conn:
    __slots__ = ("reader", "writer", "idle_since", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.reused = False

    def alive(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def abort(self) -> None:
        transport = self.writer.transport
        if transport is not None and not transport.is_closing():
            transport.abort()


class Response:
    """Status and headers of an upstream response; the body is read from it (whole, or piece by piece)."""

    def __init__(self, client: "HttpClient", origin: Origin, conn: _Conn, status: int,
                 headers: dict[str, str], keep_alive: bool, no_body: bool):
        self.status = status
        self.headers = headers
        self._client = client
        self._origin = origin
        self._conn: _Conn | None = conn
        self._keep_alive = keep_alive
        self._no_body = no_body
        self.body = b""

    async def iter_body(self, idle_timeout: float | None = None, limit: int | None = None) -> AsyncIterator[bytes]:
        """Yield body pieces as they arrive; each wait is bounded by idle_timeout."""
        conn = self._conn
        if conn is None:
            return
        reader = conn.reader
        total = 0
        try:
            if self._no_body:
                pass
            elif self.headers.get("transfer-encoding", "").lower().endswith("chunked"):
                while True:
                    line = await _within(idle_timeout, reader.readuntil(b"\r\n"))
                    try:
                        size = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise ConnectionBroken("invalid chunk size from upstream") from None
                    if size == 0:
                        while (await _within(idle_timeout, reader.readuntil(b"\r\n"))) != b"\r\n":
                            pass  # trailers
                        break
                    total += size
                    if limit is not None and total > limit:
                        raise ResponseTooLarge(f"upstream response larger than {limit} bytes")
                    while size:
                        piece = await _within(idle_timeout, reader.read(min(size, READ_PIECE)))
                        if not piece:
                            raise ConnectionBroken("upstream closed the connection in the middle of a chunk")
                        size -= len(piece)
                        yield piece
                    if await _within(idle_timeout, reader.readexactly(2)) != b"\r\n":
                        raise ConnectionBroken("improperly terminated chunk from upstream")
            elif "content-length" in self.headers:
                try:
                    remaining = int(self.headers["content-length"])
                except ValueError:
                    raise ConnectionBroken("invalid Content-Length from upstream") from None
                if limit is not None and remaining > limit:
                    raise ResponseTooLarge(f"upstream response larger than {limit} bytes")
                while remaining > 0:
                    piece = await _within(idle_timeout, reader.read(min(remaining, READ_PIECE)))
                    if not piece:
                        raise ConnectionBroken("upstream closed the connection before the body ended")
                    remaining -= len(piece)
                    yield piece
            else:
                self._keep_alive = False
                while True:
                    piece = await _within(idle_timeout, reader.read(READ_PIECE))
                    if not piece:
                        break
                    total += len(piece)
                    if limit is not None and total > limit:
                        raise ResponseTooLarge(f"upstream response larger than {limit} bytes")
                    yield piece
        except asyncio.IncompleteReadError:
            self.close()
            raise ConnectionBroken("upstream closed the connection before the body ended") from None
        except (ConnectionError, OSError) as e:
            self.close()
            raise ConnectionBroken(f"upstream connection failed: {type(e).__name__}") from None
        except asyncio.LimitOverrunError:
            self.close()
            raise ConnectionBroken("malformed chunked body from upstream") from None
        except BaseException:
            self.close()
            raise
        self._finish()

    async def read(self, idle_timeout: float | None = None, limit: int | None = None) -> bytes:
        pieces = [p async for p in self.iter_body(idle_timeout, limit)]
        self.body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return self.body

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep_alive:
            self._client._release(self._origin, conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Drop the connection (used when the body will not be read to its end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


async def _within(timeout: float | None, aw):
    if timeout is None:
        return await aw
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except TimeoutError:
        raise HttpTimeout(f"upstream sent nothing for {timeout:g}s") from None


class HttpClient:
    def __init__(self, *, connect_timeout: float = 10.0, proxy: str = "", max_idle_per_origin: int = 64,
                 idle_ttl: float = 45.0, ssl_context: ssl.SSLContext | None = None):
        self.connect_timeout = connect_timeout
        self.max_idle_per_origin = max_idle_per_origin
        self.idle_ttl = idle_ttl
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Conn]] = {}
        self._proxy = Origin.parse(proxy)[0] if proxy else None
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

    # -- connections -------------------------------------------------------------------------

    def _checkout(self, origin: Origin) -> _Conn | None:
        conns = self._idle.get(origin)
        if not conns:
            return None
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if conn.alive() and now - conn.idle_since < self.idle_ttl:
                conn.reused = True
                return conn
            conn.abort()
        return None

    def _release(self, origin: Origin, conn: _Conn) -> None:
        if not conn.alive():
            conn.abort()
            return
        conns = self._idle.setdefault(origin, [])
        if len(conns) >= self.max_idle_per_origin:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)

    async def _open(self, origin: Origin, allow_private: bool) -> _Conn:
        loop = asyncio.get_running_loop()
        host, port = origin.host, origin.port
        try:
            async with asyncio.timeout(self.connect_timeout):
                if not allow_private:
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    ips = [i[4][0] for i in infos]
                    if not ips or any(_forbidden_ip(ip) for ip in ips):
                        raise ForbiddenAddress(f"{host} resolves to a private or local address")
                    host = ips[0]
                if self._proxy is not None:
                    reader, writer = await asyncio.open_connection(self._proxy.host, self._proxy.port, limit=MAX_HEAD_BYTES)
                    if origin.tls:
                        await self._tunnel(reader, writer, origin)
                        await writer.start_tls(self.ssl_context, server_hostname=origin.host)
                elif origin.tls:
                    reader, writer = await asyncio.open_connection(
                        host, port, ssl=self.ssl_context, server_hostname=origin.host, limit=MAX_HEAD_BYTES)
                else:
                    reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD_BYTES)
        except TimeoutError:
            raise HttpTimeout(f"could not connect to {origin.host} within {self.connect_timeout:g}s") from None
        except (OSError, ssl.SSLError) as e:
            raise ConnectFailed(f"could not connect to {origin.host}: {type(e).__name__}: {e.strerror or e}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.connections_opened += 1
        return _Conn(reader, writer)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, origin: Origin) -> None:
        authority = f"{origin.host}:{origin.port}"
        writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("latin-1"))
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
        if status != b"200":
            writer.close()
            raise ConnectFailed(f"proxy refused to tunnel to {origin.host} (status {status.decode('latin-1', 'replace')})")

    # -- requests ----------------------------------------------------------------------------

    async def request(self, method: str, origin: Origin, target: str, *, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"", timeout: float = 300.0, limit: int | None = None,
                      allow_private: bool = True) -> Response:
        """Send a request and read the whole response body (bounded by `timeout` overall)."""
        try:
            async with asyncio.timeout(timeout):
                resp = await self._send(method, origin, target, headers, body, allow_private)
                await resp.read(None, limit)
                return resp
        except TimeoutError:
            raise HttpTimeout(f"no complete answer from {origin.host} within {timeout:g}s") from None

    async def open(self, method: str, origin: Origin, target: str, *, headers: Iterable[tuple[str, str]] = (),
                   body: bytes = b"", timeout: float = 300.0, allow_private: bool = True) -> Response:
        """Send a request and return once the response head has arrived; read the body from the Response."""
        try:
            async with asyncio.timeout(timeout):
                return await self._send(method, origin, target, headers, body, allow_private)
        except TimeoutError:
            raise HttpTimeout(f"no answer from {origin.host} within {timeout:g}s") from None

    async def _send(self, method: str, origin: Origin, target: str, headers: Iterable[tuple[str, str]],
                    body: bytes, allow_private: bool) -> Response:
        lines = [f"{method} {self._target(origin, target)} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        for k, v in headers:
            lines.append(f"{k}: {v}\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        payload = head + body if len(body) < 65536 else None
        for attempt in (0, 1):
            conn = self._checkout(origin) if allow_private else None
            if conn is None:
                conn = await self._open(origin, allow_private)
            try:
                if payload is not None:
                    conn.writer.write(payload)
                else:
                    conn.writer.write(head)
                    conn.writer.write(body)
                self.requests_sent += 1
                return await self._read_head(origin, conn, method)
            except ConnectionBroken:
                conn.abort()
                # A pooled connection the server closed while idle fails before any byte of a
                # response: the request never reached it, so one retry on a fresh connection is safe.
                if conn.reused and attempt == 0:
                    continue
                raise
            except (ConnectionError, OSError) as e:
                conn.abort()
                if conn.reused and attempt == 0:
                    continue
                raise ConnectionBroken(f"upstream connection failed: {type(e).__name__}") from None
            except BaseException:
                conn.abort()
                raise
        raise ConnectionBroken("upstream connection failed")  # pragma: no cover - loop always returns or raises

    def _target(self, origin: Origin, target: str) -> str:
        if self._proxy is not None and not origin.tls:
            return f"http://{origin.host_header}{target}"
        return target

    async def _read_head(self, origin: Origin, conn: _Conn, method: str) -> Response:
        reader = conn.reader
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                raise ConnectionBroken("upstream closed the connection before answering"
                                       if not e.partial else "upstream sent an incomplete response head") from None
            except asyncio.LimitOverrunError:
                raise ConnectionBroken("upstream response head is too large") from None
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
                continue  # interim responses (100 Continue, 103 Early Hints)
            break
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
        connection = headers.get("connection", "").lower()
        keep_alive = version == "HTTP/1.1" and "close" not in connection
        no_body = method == "HEAD" or status in (204, 304)
        return Response(self, origin, conn, status, headers, keep_alive, no_body)
