"""Fetching http(s) images named in a chat request, so translation gets data it can inline.

Bounded per request: how many distinct URLs (IMAGE_FETCH_MAX_IMAGES, checked before anything is fetched), how
many bytes each image and all of them together may take (IMAGE_FETCH_MAX_MB, IMAGE_FETCH_TOTAL_MB), how long
each may take (IMAGE_FETCH_TIMEOUT), and how many are downloaded at once. By default an image URL may not point
at an address that is not globally routable (a client must not make Keyloom probe its own neighbourhood).
The first failure is the client's 400 and stops the other downloads; so does the client hanging up.
"""
from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from contextlib import aclosing

from .errors import ApiError, bad_request
from .redact import Redactor, snippet
from .upstream.http import ForbiddenAddress, HttpClient, HttpError, Origin, Response, ResponseTooLarge

MAX_REDIRECTS = 3
REDIRECTS = (301, 302, 303, 307, 308)
PARALLEL = 4  # downloads of one request at a time: each open connection may buffer about a MiB beyond the total
URL_SHOWN = 200  # characters of a URL an error message repeats
HEADERS = (("Accept", "image/*"), ("User-Agent", "keyloom-image-fetch"))
_KEYS_ONLY = Redactor()  # masks anything shaped like a key


def _shown(url: str) -> str:
    """A URL as an error message repeats it: keys in it masked first, then cut (a client may put one in a query)."""
    return snippet(url, _KEYS_ONLY, URL_SHOWN)


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


class Budget:
    """The bytes the images of one request may still add up to (IMAGE_FETCH_TOTAL_MB).

    Bytes are taken as they arrive rather than reserved up front: a reservation of the per-image maximum would
    let one image hold the whole total (both are 20 MiB by default), so downloads would run one at a time.
    What a request holds still never passes the total, plus what its few open connections have buffered.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def check(self, n: int) -> None:
        """Refuse `n` more bytes (a declared Content-Length) before any of them is read."""
        if n > self.left:
            raise self.exceeded()

    def take(self, n: int) -> None:
        self.check(n)
        self.left -= n

    def exceeded(self) -> ApiError:
        return bad_request(f"the images of this request add up to more than {self.total / 1048576:g} MiB "
                           "(IMAGE_FETCH_TOTAL_MB)")


async def fetch_images(http: HttpClient, urls: Iterable[str], *, max_images: int, total_bytes: int, max_bytes: int,
                       timeout: float, allow_private: bool) -> dict[str, tuple[str, str]]:
    """→ {url: (mime type, base64 data)} for each distinct URL.

    A few downloads at a time in one task group: the first failure cancels the others and is what the client
    gets; cancelling the caller (the client hung up) cancels them all."""
    distinct = list(dict.fromkeys(urls))
    _check_count(len(distinct), max_images)
    budget = Budget(total_bytes)
    results: dict[str, tuple[str, str]] = {}
    pending = iter(distinct)

    async def worker() -> None:
        for url in pending:  # shared: each URL goes to whichever worker is free
            results[url] = await fetch_image(http, url, max_bytes=max_bytes, timeout=timeout,
                                             allow_private=allow_private, budget=budget)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(PARALLEL, len(distinct))):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None  # the first to fail: the others were cancelled after it
    return {url: results[url] for url in distinct}


def _check_count(n: int, max_images: int) -> None:
    if n <= max_images:
        return
    if max_images == 0:
        raise bad_request("image URLs are not accepted here (IMAGE_FETCH_MAX_IMAGES is 0); send images inline "
                          "as data: URLs")
    raise bad_request(f"the request names {n} distinct image URLs; at most {max_images} are fetched "
                      "(IMAGE_FETCH_MAX_IMAGES); send the others inline as data: URLs")


async def fetch_image(http: HttpClient, url: str, *, max_bytes: int, timeout: float, allow_private: bool,
                      budget: Budget | None = None) -> tuple[str, str]:
    """→ (mime type, base64 data); any failure is an ApiError (400) that names the URL."""
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    origin, target = Origin.parse(url)
                except ValueError as e:
                    raise bad_request(f"image URL {_shown(url)} cannot be used: {e}") from None
                resp = await http.open("GET", origin, target, headers=HEADERS, timeout=timeout,
                                       allow_private=allow_private)
                try:
                    location = resp.headers.get("location")
                    if resp.status in REDIRECTS and location:
                        url = f"{origin.scheme}://{origin.host_header}{location}" if location.startswith("/") \
                            else location
                        continue
                    if resp.status != 200:
                        raise bad_request(f"could not fetch image {_shown(url)}: HTTP {resp.status}")
                    data = await _read(resp, max_bytes, budget or Budget(max_bytes))
                finally:
                    resp.close()  # unless it was read to its end: then it is back in the pool, and this does nothing
                mime = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if not mime.startswith("image/"):
                    mime = _sniff(data) or ""
                if not mime:
                    raise bad_request(f"{_shown(url)} is not an image")
                return mime, base64.b64encode(data).decode("ascii")
            raise bad_request(f"could not fetch image {_shown(url)}: too many redirects")
    except TimeoutError:
        raise bad_request(f"could not fetch image {_shown(url)} within {timeout:g}s") from None
    except ForbiddenAddress:
        raise bad_request(f"image URL {_shown(url)} points to a private or local address, which is not "
                          "allowed (IMAGE_FETCH_ALLOW_PRIVATE)") from None
    except ResponseTooLarge:
        raise bad_request(f"image {_shown(url)} is larger than the {max_bytes / 1048576:g} MiB limit "
                          "(IMAGE_FETCH_MAX_MB)") from None
    except HttpError as e:
        raise bad_request(f"could not fetch image {_shown(url)}: {e}") from None


async def _read(resp: Response, max_bytes: int, budget: Budget) -> bytes:
    """The body, each piece taken from the request's budget as it arrives; a declared length is judged first."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit():
        if int(declared) > max_bytes:
            raise ResponseTooLarge(f"upstream response larger than {max_bytes} bytes")
        budget.check(int(declared))
    pieces = []
    async with aclosing(resp.iter_body(limit=max_bytes)) as body:
        async for piece in body:
            budget.take(len(piece))
            pieces.append(piece)
    return b"".join(pieces)
