"""Fetching http(s) images named in a chat request, so translation gets data it can inline.

Bounded in size and time; by default an image URL may not point into private,
loopback or link-local networks (a client must not make Keyloom probe its own
neighbourhood). Failures are the client's 400, naming the URL's message index.
"""
from __future__ import annotations

import asyncio
import base64
from typing import Iterable

from .errors import bad_request
from .upstream.http import ForbiddenAddress, HttpClient, HttpError, Origin, ResponseTooLarge

MAX_REDIRECTS = 3


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


async def fetch_image(http: HttpClient, url: str, *, max_bytes: int, timeout: float,
                      allow_private: bool) -> tuple[str, str]:
    """→ (mime type, base64 data)."""
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    origin, target = Origin.parse(url)
                except ValueError:
                    raise bad_request(f"image URL is not a valid http(s) URL: {url[:200]}") from None
                resp = await http.request("GET", origin, target, headers=(("Accept", "image/*"),
                                                                          ("User-Agent", "keyloom-image-fetch")),
                                          timeout=timeout, limit=max_bytes, allow_private=allow_private)
                if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                    location = resp.headers["location"]
                    if location.startswith("/"):
                        location = f"{origin.scheme}://{origin.host_header}{location}"
                    url = location
                    continue
                if resp.status != 200:
                    raise bad_request(f"could not fetch image {url[:200]}: HTTP {resp.status}")
                data = resp.body
                mime = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if not mime.startswith("image/"):
                    mime = _sniff(data) or ""
                if not mime:
                    raise bad_request(f"{url[:200]} is not an image")
                return mime, base64.b64encode(data).decode("ascii")
            raise bad_request(f"could not fetch image {url[:200]}: too many redirects")
    except TimeoutError:
        raise bad_request(f"could not fetch image {url[:200]} within {timeout:g}s") from None
    except ForbiddenAddress:
        raise bad_request(f"image URL {url[:200]} points to a private or local address, which is not allowed "
                          "(IMAGE_FETCH_ALLOW_PRIVATE)") from None
    except ResponseTooLarge:
        raise bad_request(f"image {url[:200]} is larger than the {max_bytes / 1048576:g} MiB limit "
                          "(IMAGE_FETCH_MAX_MB)") from None
    except HttpError as e:
        raise bad_request(f"could not fetch image {url[:200]}: {e}") from None


async def fetch_images(http: HttpClient, urls: Iterable[str], **limits) -> dict[str, tuple[str, str]]:
    urls = list(urls)
    results = await asyncio.gather(*(fetch_image(http, u, **limits) for u in urls))
    return dict(zip(urls, results))
