"""http(s) image URLs in a chat request are fetched (bounded) and sent to Gemini inline."""
from __future__ import annotations

import base64

import openai
import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==")


class Image(tornado.web.RequestHandler):
    def get(self, name):
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


@pytest.fixture(scope="module")
def images(loop_thread):
    async def start():
        server = HTTPServer(tornado.web.Application([(r"/img/(.+)", Image)], log_function=lambda h: None))
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        return server, f"http://127.0.0.1:{sockets[0].getsockname()[1]}/img"
    server, url = loop_thread.run(start())
    yield url
    loop_thread.call(server.stop)


def ask(kl, url):
    return kl.client().chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]}])


@pytest.mark.parametrize("name", ["cat.png", "untyped", "moved"])
def test_remote_image_is_fetched_and_inlined(start_keyloom, fake, images, name):
    kl = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true")
    ask(kl, f"{images}/{name}")
    part = fake.generate_calls()[0].body["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}


@pytest.mark.parametrize("name, needle", [("page.html", "not an image"), ("missing.png", "HTTP 404"),
                                          ("big.png", "larger than")])
def test_bad_remote_images_are_clear_400s(start_keyloom, fake, images, name, needle):
    kl = start_keyloom(IMAGE_FETCH_ALLOW_PRIVATE="true", IMAGE_FETCH_MAX_MB="0.01")
    with pytest.raises(openai.BadRequestError) as e:
        ask(kl, f"{images}/{name}")
    assert needle in e.value.message
    assert fake.generate_calls() == []


def test_private_addresses_are_refused_by_default(keyloom, fake, images):
    with pytest.raises(openai.BadRequestError) as e:
        ask(keyloom, f"{images}/cat.png")
    assert "private or local address" in e.value.message
    assert fake.generate_calls() == []
