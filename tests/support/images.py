"""A loopback web server of images for the tests that give Keyloom image URLs (fetching, the upstream proxy)."""
from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from tests.support.loop import LoopThread

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7w"
                       "AAAABJRU5ErkJggg==")


class Image(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        if name == "cat.png":
            self.set_header("Content-Type", "image/png")
            self.write(PNG)
        elif name == "untyped":
            self.set_header("Content-Type", "application/octet-stream")
            self.write(PNG)
        elif name == "big.png":
            self.set_header("Content-Type", "image/png")
            self.write(b"\x89PNG" + b"0" * 50_000)
        elif name == "page.html":
            self.write("<html>not an image</html>")
        elif name == "moved":
            self.redirect("/img/cat.png")
        else:
            self.set_status(404)


@contextmanager
def serving_images(loop_thread: LoopThread) -> Iterator[str]:
    """The base URL (`http://127.0.0.1:<port>/img`) of an image server on the shared test loop, stopped after."""
    async def start() -> tuple[HTTPServer, str]:
        server = HTTPServer(tornado.web.Application([(r"/img/(.+)", Image)], log_function=lambda h: None))
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        return server, f"http://127.0.0.1:{sockets[0].getsockname()[1]}/img"
    server, url = loop_thread.run(start())
    try:
        yield url
    finally:
        loop_thread.call(server.stop)
