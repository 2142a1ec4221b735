"""Real forward proxies on loopback for the UPSTREAM_PROXIES tests: an HTTP CONNECT proxy and a SOCKS5 server
(RFC 1928 CONNECT, RFC 1929 user/password), both with optional credentials. This is the server side only; Keyloom's
client side is python-socks and its own CONNECT code.

Each proxy records the tunnels it opened (the target as asked for), and connects to the upstream from a loopback
address of its own (127.0.0.11, .12, …; Linux routes all of 127/8 to lo): the fake Gemini records the address of
every request's caller (`Recorded.peer`), so a test can tell which proxy carried which request, and with it which
key. (Source ports would not do: on loopback Linux reuses a port in TIME_WAIT at once.) A proxy can be stopped
(its port refuses connections, its tunnels are cut) and started again on the same port."""
from __future__ import annotations

import asyncio
import base64
import itertools
import socket

_SOURCES = itertools.count(11)  # 127.0.0.11 onwards: one source address per proxy made in this process




async def pipe_both(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> None:
    """Copy both ways between a client's streams and the upstream's, until both ends close."""
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

class _Forwarder:
    scheme = ""

    def __init__(self, user: str | None = None, password: str | None = None):
        self.user, self.password = user, password
        self.tunnels: list[tuple[str, int]] = []   # (host as asked, port)
        self.source = f"127.0.0.{next(_SOURCES)}"  # the address our upstream connections come from
        self.carried = 0                           # upstream connections made
        self.refused = 0                           # handshakes turned away (wrong or missing credentials)
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def start(self) -> str:
        """Listen (again, on the same port after a stop)."""
        self.server = await asyncio.start_server(self._run, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        """Stop listening and cut every tunnel: the proxy is down."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:  # stop(): ended on purpose (asyncio's server logs a cancelled handler)
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _upstream(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Every test origin listens on 127.0.0.1, whatever name it was asked for."""
        self.tunnels.append((host, port))
        up_r, up_w = await asyncio.open_connection("127.0.0.1", port, local_addr=(self.source, 0))
        self.carried += 1
        return up_r, up_w

    _pipe_both = staticmethod(lambda *streams: pipe_both(*streams))


class HttpConnectProxy(_Forwarder):
    """CONNECT only (Keyloom reaches Google over https, so CONNECT is what it sends), Basic credentials optional."""

    scheme = "http"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        if self.user is not None:
            expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            auth = next((v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
                         if k.lower() == "proxy-authorization"), "")
            if auth != expected:
                self.refused += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                return
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        up_r, up_w = await self._upstream(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await self._pipe_both(reader, writer, up_r, up_w)


class Socks5Proxy(_Forwarder):
    """SOCKS5 CONNECT with no authentication, or user/password (RFC 1929) when given credentials."""

    scheme = "socks5"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        wanted = 2 if self.user is not None else 0
        if version != 5 or wanted not in methods:
            self.refused += 1
            writer.write(b"\x05\xff")
            await writer.drain()
            return
        writer.write(bytes([5, wanted]))
        if wanted == 2:
            await reader.readexactly(1)  # the sub-negotiation's version (1)
            user = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            password = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            ok = user == self.user and password == self.password
            writer.write(bytes([1, 0 if ok else 1]))
            await writer.drain()
            if not ok:
                self.refused += 1
                return
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        if command != 1:  # CONNECT only
            writer.write(b"\x05\x07\x00\x01" + bytes(6))
            await writer.drain()
            return
        try:
            up_r, up_w = await self._upstream(host, port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
            await writer.drain()
            return
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await self._pipe_both(reader, writer, up_r, up_w)
