"""The event loop is never blocked by a request: Markdown is rendered in a worker process with a size and a
time budget, and client schemas too deep (or too large once `$ref` is inlined) are a 400, not a 500.

Sequence points are events (the renderer says its worker holds the texts; a request has or has not been
answered), never sleeps or durations."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from server.app import Keyloom
from server.errors import ApiError
from server.render import Renderer
from server.settings import Settings
from tests.conftest import keyloom_env

BIG = "[" * (256 * 1024)  # the largest text the size budget lets through, and seconds of markdown-it work
MESSAGES = [{"role": "user", "content": "Hi"}]


def wait_until(predicate: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    """Poll for an event with a generous deadline: the deadline only turns a hang into a failure."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


class Background:
    """A blocking call on a thread of its own, so the test can act while it is pending."""

    def __init__(self, fn: Callable[[], Any]):
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._fn = fn
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e
        finally:
            self.done.set()

    def get(self, timeout: float = 120.0) -> Any:
        assert self.done.wait(timeout), "the background call never ended"
        if self.error is not None:
            raise self.error
        return self.result


def use_renderer(keyloom: Any, **kw: Any) -> Any:
    """Swap in a renderer with test budgets (made on the loop thread, where it will run)."""
    renderer = keyloom.loop.call(lambda: Renderer(**kw))
    keyloom.kl.renderer = renderer
    return renderer


def unrendered(text: str) -> str:
    return '<pre class="unrendered">' + text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + "</pre>"


# -- rendering ---------------------------------------------------------------------------------------

def test_a_render_in_progress_does_not_hold_up_other_requests(keyloom):
    renderer = use_renderer(keyloom, budget=3600)  # this test ends the render itself
    events: list[str] = []
    with keyloom.http(headers=keyloom.auth(), timeout=120) as api, keyloom.http() as other:
        def render() -> httpx.Response:
            r = api.post("/api/render", json={"markdown": [BIG] * 4})  # 1 MiB of `[`, within the size budget
            events.append("render answered")
            return r

        call = Background(render)
        wait_until(lambda: renderer.busy, "the worker holds the texts")
        assert other.get("/health").status_code == 200
        events.append("health answered")
        assert not call.done.is_set() and renderer.busy  # answered while the render is still going on
        keyloom.loop.run(renderer.close())  # as Keyloom's stop does: the call gets its texts back unrendered
        r = call.get()
    assert events == ["health answered", "render answered"]
    assert r.status_code == 200 and r.json() == {"html": [unrendered(BIG)] * 4}


def test_a_render_over_its_time_budget_comes_back_as_plain_text_and_the_worker_restarts(keyloom):
    renderer = use_renderer(keyloom, budget=60)
    with keyloom.http(headers=keyloom.auth(), timeout=120) as api:
        assert api.post("/api/render", json={"markdown": "*warm*"}).json() == {"html": "<p><em>warm</em></p>\n"}
        first = renderer.pid
        assert first is not None and renderer.starts == 1
        renderer.budget = 0.05  # seconds, where BIG takes seconds (and longer on a busy machine, never less)
        r = api.post("/api/render", json={"markdown": [BIG, "<b>c</b>"]})
        assert r.status_code == 200  # not an error: escaped text, marked as such
        assert r.json() == {"html": [unrendered(BIG), unrendered("<b>c</b>")]}
        assert renderer.pid is None  # killed, not left to finish
        renderer.budget = 60
        assert api.post("/api/render", json={"markdown": "**x**"}).json() == {"html": "<p><strong>x</strong></p>\n"}
        assert renderer.starts == 2 and renderer.pid not in (None, first)


def test_texts_over_the_size_budget_are_a_413(keyloom):
    with keyloom.http(headers=keyloom.auth(), timeout=120) as api:
        for markdown in (["a" * (256 * 1024)] * 5, "a" * (256 * 1024 + 1), "[" * (1024 * 1024)):
            r = api.post("/api/render", json={"markdown": markdown})
            assert r.status_code == 413, r.text[:200]
            assert r.json()["error"]["code"] == "request_too_large" and "limit" in r.json()["error"]["message"]
    assert keyloom.kl.renderer.starts == 0  # refused before any work


def test_the_worker_starts_on_first_use_and_still_sanitizes(keyloom):
    renderer = keyloom.kl.renderer
    assert renderer.starts == 0 and renderer.pid is None  # not at import, not at Keyloom's start
    with keyloom.http(headers=keyloom.auth()) as api:
        body = {"markdown": "<script>alert(1)</script>\n\n[x](javascript:alert(1))\n\n**ok** \ud800"}
        html = api.post("/api/render", content=json.dumps(body),  # ASCII JSON: the lone surrogate travels
                        headers={"Content-Type": "application/json"}).json()["html"]
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript' not in html and "<strong>ok</strong>" in html
    assert renderer.starts == 1 and renderer.pid is not None and renderer.pid != os.getpid()


def test_calls_beyond_the_queue_get_a_503(keyloom):
    renderer = use_renderer(keyloom, budget=3600, max_waiting=1)

    async def scenario() -> tuple[list[str], Any, Any]:
        first = asyncio.ensure_future(renderer.render_many([BIG] * 4))
        while not renderer.busy:  # an event, polled: the worker holds the first call's texts
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(renderer.render_many(["*second*"]))
        while renderer.waiting < 1:
            await asyncio.sleep(0)
        with pytest.raises(ApiError) as refused:
            await renderer.render_many(["*third*"])
        await renderer.close()
        return await first, await asyncio.gather(second, return_exceptions=True), refused.value

    first, (second,), refused = keyloom.loop.run(scenario(), timeout=120)
    assert refused.status == 503 and refused.code == "renderer_busy"
    assert first == [unrendered(BIG)] * 4  # closed while rendering
    assert isinstance(second, ApiError) and second.status == 503  # waited, then found Keyloom stopping


def test_keyloom_stop_ends_the_worker(loop_thread, fake, tmp_path):
    settings = Settings.from_env(keyloom_env(fake, tmp_path))

    async def run() -> int:
        kl = Keyloom(settings, password=settings.PASSWORD, data_dir=tmp_path, env={})
        await kl.start(port=0)
        await kl.renderer.render_many(["*hi*"])
        pid = kl.renderer.pid
        await kl.stop(0)
        return pid

    pid = loop_thread.run(run())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- deep schemas ------------------------------------------------------------------------------------

def nested(kind: str, levels: int) -> dict[str, Any]:
    """A schema `levels` deep (the root is level 1), built without recursion."""
    if kind == "example":  # a value copied as it is, nested `levels` deep
        value: Any = 1
        for _ in range(levels):
            value = [value]
        return {"type": "array", "items": {"type": "integer"}, "example": value}
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels - 1):
        if kind == "properties":
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        elif kind == "items":
            schema = {"type": "array", "items": schema}
        elif kind == "anyOf":
            schema = {"anyOf": [schema, {"type": "integer"}]}
        else:
            schema = {"allOf": [schema, {"description": "x"}]}
    return schema


def depth(schema: Any) -> int:
    """How many schemas deep a translated schema is (iteratively)."""
    deepest, stack = 0, [(schema, 1)]
    while stack:
        s, d = stack.pop()
        deepest = max(deepest, d)
        children = [*s.get("properties", {}).values(), *s.get("anyOf", [])]
        if "items" in s:
            children.append(s["items"])
        stack.extend((c, d + 1) for c in children)
    return deepest


@pytest.fixture
def deep_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """The openai SDK encodes the body with the standard json module, which recurses: let it encode 500
    levels of schema. Only while it encodes, so the server (in this process) keeps the usual limit."""
    from openai import _base_client
    dumps = _base_client.openapi_dumps

    def deep_dumps(obj: Any) -> bytes:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, 10_000))
        try:
            return dumps(obj)
        finally:
            sys.setrecursionlimit(old)

    monkeypatch.setattr(_base_client, "openapi_dumps", deep_dumps)


def tool(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "f", "parameters": schema}}]


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}


KINDS = ["properties", "items", "anyOf", "allOf", "example"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where, param", [("tools", "tools[0].function.parameters"),
                                          ("response_format", "response_format.json_schema.schema")])
def test_a_schema_500_deep_is_a_400(keyloom, fake, deep_json, kind, where, param):
    schema = nested(kind, 500)
    extra = {"tools": tool(schema)} if where == "tools" else {"response_format": json_schema(schema)}
    with pytest.raises(openai.BadRequestError) as e:
        keyloom.client().chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES, **extra)
    err = e.value.body
    assert err["param"] == param and "64 levels" in err["message"], err
    assert fake.generate_calls() == []


def test_the_depth_limit_is_64_levels_exactly(keyloom, fake):
    client = keyloom.client()
    client.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES, tools=tool(nested("properties", 64)),
                                   response_format=json_schema(nested("items", 64)))
    [call] = fake.generate_calls()
    assert depth(call.body["tools"][0]["functionDeclarations"][0]["parameters"]) == 64
    assert depth(call.body["generationConfig"]["responseSchema"]) == 64
    for kw in ({"tools": tool(nested("properties", 65))}, {"response_format": json_schema(nested("items", 65))}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES, **kw)
    assert len(fake.generate_calls()) == 1


def ref_bomb(fan_out: int, levels: int) -> dict[str, Any]:
    """Small to send, fan_out**levels schemas once `$ref` is inlined."""
    defs: dict[str, Any] = {f"D{i}": {"type": "object", "properties": {
        f"p{j}": {"$ref": f"#/$defs/D{i + 1}"} for j in range(fan_out)}} for i in range(levels)}
    defs[f"D{levels}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/D0"}


def test_schemas_that_ref_inlining_blows_up_are_a_400(keyloom, fake):
    client = keyloom.client()
    with pytest.raises(openai.BadRequestError) as e:  # 4**8 = 65,536 schemas
        client.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES, tools=tool(ref_bomb(4, 8)))
    assert e.value.body["param"] == "tools[0].function.parameters" and "10000" in e.value.body["message"]
    many = [{"type": "function", "function": {"name": f"f{i}", "parameters": ref_bomb(3, 6)}}  # 1,093 each
            for i in range(12)]
    with pytest.raises(openai.BadRequestError) as e:  # the budget is the request's, not each tool's
        client.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES, tools=many)
    assert e.value.body["param"].startswith("tools[")
    assert fake.generate_calls() == []
    client.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES, tools=many[:8])
    assert len(fake.generate_calls()) == 1


def test_odd_schema_values_are_no_500(keyloom, fake):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": 5,
              "propertyOrdering": [{"x": 1}, "a"], "allOf": [{"required": [{"y": 2}, "a"]}]}
    keyloom.client().chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES, tools=tool(schema))
    params = fake.generate_calls()[0].body["tools"][0]["functionDeclarations"][0]["parameters"]
    assert params["propertyOrdering"] == ["a"] and params["required"] == ["a"]
