"""A real HTTP fake of an OpenAI-compatible server (Ollama, llama.cpp, vLLM, a hosted service), for tests.

`/v1/chat/completions` (JSON or SSE, `delay` between stream events), `/v1/embeddings`, `/v1/models`.
Keys: `keys` maps a key to a behaviour (ok, invalid → 401, quota → 429 with Retry-After, down → 503);
with `keyless=True` any request is accepted and none may carry Authorization. Every request is kept.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import tornado.web
import ujson
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets


@dataclass
class Seen:
    path: str
    key: str | None
    body: Any
    raw: bytes
    time: float


@dataclass
class FakeOpenAI:
    models: list[str] = field(default_factory=lambda: ["llama3.1:8b", "qwen2.5"])
    keys: dict[str, str] = field(default_factory=dict)
    keyless: bool = False
    pieces: int = 4
    delay: float = 0.0          # seconds between stream events (and before a JSON answer)
    first_delay: float = 0.0    # seconds before a stream's response head
    requests: list[Seen] = field(default_factory=list)
    base_url: str = ""
    server: HTTPServer | None = None

    def reset(self) -> None:
        self.keys.clear()
        self.keyless = False
        self.delay = 0.0
        self.first_delay = 0.0
        self.pieces = 4
        self.requests.clear()

    async def start(self) -> str:
        app = tornado.web.Application([
            (r"/v1/chat/completions", _Chat, {"fake": self}),
            (r"/v1/embeddings", _Embeddings, {"fake": self}),
            (r"/v1/models", _Models, {"fake": self}),
        ], log_function=lambda handler: None)
        self.server = HTTPServer(app)
        sockets = bind_sockets(0, "127.0.0.1")
        self.server.add_sockets(sockets)
        self.base_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()


def answer(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(text.split()),
                      "total_tokens": 7 + len(text.split())},
            "system_fingerprint": "fp_fake"}


class _Base(tornado.web.RequestHandler):
    def initialize(self, fake: FakeOpenAI) -> None:
        self.fake = fake

    def send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.set_header(k, v)
        self.finish(ujson.dumps(body))

    def admit(self) -> bool:
        auth = self.request.headers.get("Authorization")
        key = auth[7:] if auth and auth.startswith("Bearer ") else None
        body = ujson.loads(self.request.body) if self.request.body else None
        self.fake.requests.append(Seen(self.request.path, key, body, self.request.body, time.time()))
        if self.fake.keyless:
            if key is not None:
                self.send(400, {"error": {"message": "this local server takes no key", "type": "invalid_request"}})
                return False
            return True
        behaviour = self.fake.keys.get(key or "", "invalid")
        if behaviour == "invalid":
            self.send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                      "code": "invalid_api_key"}})
            return False
        if behaviour == "quota":
            self.send(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
                      {"Retry-After": "30"})
            return False
        if behaviour == "down":
            self.send(503, {"error": {"message": "overloaded", "type": "server_error"}})
            return False
        return True


class _Models(_Base):
    def get(self) -> None:
        if self.admit():
            self.send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 1, "owned_by": "x"}
                                                       for m in self.fake.models]})


class _Embeddings(_Base):
    def post(self) -> None:
        if not self.admit():
            return
        body = ujson.loads(self.request.body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        self.send(200, {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3},
                        "data": [{"object": "embedding", "index": i, "embedding": [float(len(x)), 0.5]}
                                 for i, x in enumerate(inputs)]})


class _Chat(_Base):
    async def post(self) -> None:
        if not self.admit():
            return
        body = ujson.loads(self.request.body)
        model = body.get("model")
        if model not in self.fake.models:
            self.send(404, {"error": {"message": f"model {model!r} not found", "type": "invalid_request_error"}})
            return
        last = body["messages"][-1]["content"]
        text = f"{model} says: {last}"
        if not body.get("stream"):
            await asyncio.sleep(self.fake.delay)
            self.send(200, answer(model, text))
            return
        await asyncio.sleep(self.fake.first_delay)
        self.set_header("Content-Type", "text/event-stream")
        words = text.split(" ")
        size = max(1, -(-len(words) // self.fake.pieces))
        chunks = [" ".join(words[i:i + size]) + (" " if i + size < len(words) else "")
                  for i in range(0, len(words), size)]
        try:
            for i, piece in enumerate(chunks):
                if i:
                    await asyncio.sleep(self.fake.delay)
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                         "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                self.write(b"data: " + ujson.dumps(event).encode() + b"\n\n")
                await self.flush()
            end = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.write(b"data: " + ujson.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
            self.finish()
        except StreamClosedError:
            return
