"""http(s) image URLs in a chat request are fetched (bounded) and sent to Gemini inline."""
from __future__ import annotations

import base64

import openai
import pytest

from tests.support.images import PNG, serving_images


@pytest.fixture(scope="module")
def images(loop_thread):
    with serving_images(loop_thread) as url:
        yield url


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
