"""Model output as safe HTML, for the chat playground.

markdown-it-py renders CommonMark (with tables and strikethrough) without raw HTML: HTML the model writes
is escaped and shows as text. nh3 (ammonia) then keeps only an allow-list of tags and attributes and only
http, https and mailto links, as a second wall. Links open in a new tab without a referrer.

`render` is pure and can be slow: markdown-it is pure Python and some inputs cost far more than their size
suggests (1 MiB of `[` takes over 20 s). The server therefore never calls it on its event loop: `Renderer`
sends texts to a worker process (a fresh interpreter, started on first use) with a size budget per call
and a time budget per call. A thread would not do: it holds the GIL the loop needs and cannot be stopped.
When the time runs out the worker is killed (the next call starts a new one) and the texts it had not
rendered come back as escaped plain text, `<pre class="unrendered">…</pre>`: readable, inert, and
recognisable, as the sanitizer never lets a `class` through on `<pre>`.
"""
from __future__ import annotations

import asyncio
import html as html_lib
import json
import logging
import signal
import struct
import sys
from pathlib import Path
from typing import IO, Any

import nh3
from markdown_it import MarkdownIt

from .errors import ApiError

log = logging.getLogger("keyloom")

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"])

TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
        "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "img"}
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "code": {"class"}, "th": {"style"},
              "td": {"style"}, "ol": {"start"}}
MAX_MARKDOWN = 2 * 1024 * 1024

# Budgets of the worker. Gemini answers at most 65,536 tokens (~260 K characters), so one text of 256 Ki
# characters holds any single reply; 1 Mi characters of ordinary Markdown renders in about 2 s, well within
# the 5 s budget, while pathological text (a run of `[`) runs into it.
MAX_TEXT_CHARS = 256 * 1024
MAX_CALL_CHARS = 1024 * 1024
RENDER_BUDGET = 5.0      # seconds of rendering per call, from the moment the worker has the texts
MAX_WAITING = 4          # calls that may wait behind the one being rendered; more get a 503
START_TIMEOUT = 60.0     # a cold interpreter on a busy small box; not part of the render budget
UNRENDERED = '<pre class="unrendered">{}</pre>'

_HEADER = struct.Struct(">I")
_ROOT = str(Path(__file__).resolve().parent.parent)


def render(markdown: str) -> str:
    html = _md.render(markdown[:MAX_MARKDOWN])
    return nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     link_rel="noopener noreferrer nofollow", strip_comments=True,
                     set_tag_attribute_values={"a": {"target": "_blank"}},
                     filter_style_properties={"text-align"})


def unrendered(text: str) -> str:
    """A text shown as it is: what a call gets for the texts the worker did not render in time."""
    return UNRENDERED.format(html_lib.escape(text))


# -- the wire: a 4-byte length, then JSON (ASCII, so lone surrogates travel too) ---------------------

def _frame(value: Any) -> bytes:
    data = json.dumps(value).encode("ascii")
    return _HEADER.pack(len(data)) + data


def _read_frame_sync(stream: IO[bytes]) -> Any:
    """The next frame, or None at the end of the stream (the server closed the pipe or died)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    return json.loads(stream.read(_HEADER.unpack(header)[0]))


async def _read_frame(stream: asyncio.StreamReader) -> Any:
    (size,) = _HEADER.unpack(await stream.readexactly(_HEADER.size))
    return json.loads(await stream.readexactly(size))


# -- the worker process ------------------------------------------------------------------------------

def serve() -> None:
    """The worker: read a list of texts, answer one frame per text (its HTML, or null if rendering raised),
    until stdin ends. Ctrl-C in the server's terminal is the server's to handle: the worker ends with it,
    when its stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    out.write(_frame("ready"))
    out.flush()
    while (texts := _read_frame_sync(inp)) is not None:
        for text in texts:
            try:
                html: str | None = render(text)
            except Exception:
                html = None
            out.write(_frame(html))
            out.flush()


_WORKER = [sys.executable, "-c", f"import sys; sys.path.insert(0, {_ROOT!r}); from server.render import serve; serve()"]


# -- the service the server uses --------------------------------------------------------------------

def too_large(texts: list[str]) -> ApiError | None:
    """The size budget: the error for texts over it, else None."""
    longest = max(map(len, texts), default=0)
    if longest > MAX_TEXT_CHARS:
        return ApiError(413, f"A text to render holds {longest} characters; the limit is {MAX_TEXT_CHARS}.",
                        code="request_too_large", param="markdown")
    total = sum(map(len, texts))
    if total > MAX_CALL_CHARS:
        return ApiError(413, f"The texts to render hold {total} characters together; the limit is "
                             f"{MAX_CALL_CHARS} per request.", code="request_too_large", param="markdown")
    return None


class Renderer:
    """Markdown → safe HTML off the event loop, in one worker process, one call at a time.

    The worker is started on the first call, not before: most deployments never render. It is a fresh
    interpreter (spawn, not fork: the server has an event loop and the database's thread, which a forked
    child would inherit in whatever state they were in), importing only this module, so it stays small.
    It exits by itself when its stdin closes, so it cannot outlive the server.
    """

    def __init__(self, budget: float = RENDER_BUDGET, *, max_waiting: int = MAX_WAITING,
                 start_timeout: float = START_TIMEOUT):
        self.budget = budget
        self.max_waiting = max_waiting
        self.start_timeout = start_timeout
        self.starts = 0        # workers started so far (a restart after a timeout counts)
        self.busy = False      # the worker holds texts of a call right now
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._closed = False

    @property
    def waiting(self) -> int:
        """Calls waiting for the worker behind the one it is rendering."""
        return self._waiting

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def render_many(self, texts: list[str]) -> list[str]:
        """One HTML per text, in order; texts not rendered within the budget come back `unrendered`.
        Raises ApiError: 413 over the size budget, 503 when too many calls wait or no worker can start."""
        if (error := too_large(texts)) is not None:
            raise error
        texts = [_valid_unicode(t) for t in texts]
        if self._waiting >= self.max_waiting:
            raise ApiError(503, "The Markdown renderer is busy; try again in a moment.", type="server_error",
                           code="renderer_busy", headers={"Retry-After": "1"})
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            return await self._call(texts)
        finally:
            self._lock.release()

    async def _call(self, texts: list[str]) -> list[str]:
        proc = await self._worker()
        done: list[str | None] = []
        try:
            await asyncio.wait_for(self._exchange(proc, texts, done), self.budget)
        except TimeoutError:
            log.warning("rendering %d text(s) took over %gs: the renderer was restarted", len(texts), self.budget)
            await self._stop_worker()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            log.warning("the renderer ended unexpectedly; it starts again on the next call")
            await self._stop_worker()
        except BaseException:  # cancelled: the pipe is mid-call, so the worker cannot be reused
            await self._stop_worker()
            raise
        finally:
            self.busy = False
        done += [None] * (len(texts) - len(done))
        return [html if html is not None else unrendered(text) for text, html in zip(texts, done, strict=True)]

    async def _exchange(self, proc: asyncio.subprocess.Process, texts: list[str], done: list[str | None]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(_frame(texts))
        await proc.stdin.drain()
        self.busy = True
        for _ in texts:
            done.append(await _read_frame(proc.stdout))

    async def _worker(self) -> asyncio.subprocess.Process:
        """The running worker, started if there is none (first use, or after a timeout or a crash)."""
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        if self._closed:
            raise ApiError(503, "Keyloom is shutting down.", type="server_error", code="shutting_down")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *_WORKER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self.starts += 1
            assert self._proc.stdout is not None
            ready = await asyncio.wait_for(_read_frame(self._proc.stdout), self.start_timeout)
            if ready != "ready":
                raise ValueError(f"unexpected first frame {ready!r}")
        except Exception:
            log.exception("the Markdown renderer could not start")
            await self._stop_worker()
            raise ApiError(503, "The Markdown renderer could not start.", type="server_error",
                           code="renderer_unavailable") from None
        return self._proc

    async def _stop_worker(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        await proc.wait()

    async def close(self) -> None:
        """At Keyloom's stop: end the worker (a call still waiting on it gets its texts `unrendered`)."""
        self._closed = True
        await self._stop_worker()


def _valid_unicode(text: str) -> str:
    """The text with lone surrogates (valid in JSON, not in UTF-8) replaced, so that it can be rendered and
    sent back."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
