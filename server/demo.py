"""`python run.py --demo`: a simulated Gemini API inside the process, so a newcomer sees models,
chat, streaming and fake streaming work with no key and no network.

It is a real HTTP server on a loopback port and Keyloom talks to it exactly as to
Google (same client, same key header, same SSE framing), so the demo exercises
the whole request path. One of its keys is always over quota, to show rotation.
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import tornado.web
import ujson
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

DEMO_KEYS = ("demo-key-1", "demo-key-2", "demo-key-3-over-quota")
MODELS: list[dict[str, Any]] = [
    {"name": "models/gemini-2.5-pro", "displayName": "Gemini 2.5 Pro (demo)", "thinking": True,
     "supportedGenerationMethods": ["generateContent", "countTokens"], "outputTokenLimit": 65536},
    {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash (demo)", "thinking": True,
     "supportedGenerationMethods": ["generateContent", "countTokens"], "outputTokenLimit": 65536},
    {"name": "models/gemini-2.0-flash", "displayName": "Gemini 2.0 Flash (demo)",
     "supportedGenerationMethods": ["generateContent", "countTokens"], "outputTokenLimit": 8192},
    {"name": "models/gemini-embedding-001", "displayName": "Gemini Embedding (demo)",
     "supportedGenerationMethods": ["embedContent"]},
]
# Pro "thinks" long enough that fake streaming's keep-alives are visible.
DELAYS = {"gemini-2.5-pro": 2.5, "gemini-2.5-flash": 0.4, "gemini-2.0-flash": 0.2}


def _error(code: int, status: str, message: str, details: list[Any] | None = None) -> bytes:
    return ujson.dumps({"error": {"code": code, "message": message, "status": status,
                                  "details": details or []}}).encode()


def _last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            texts = [p.get("text", "") for p in content.get("parts") or [] if isinstance(p, dict)]
            text = " ".join(t for t in texts if t).strip()
            if text:
                return text
    return ""


def _inline(text: str) -> str:
    """The user's words on one line, so that a line break in them cannot end the bold quote around them."""
    return " ".join(text.split())


def _answer(body: dict[str, Any]) -> tuple[str, str | None]:
    """A reply in Markdown (a heading, bold, a list, a table, a code block), so the chat playground's
    rendering can be seen with no key."""
    said = _inline(_last_user_text(body)[:300])
    text = (
        "### Hello from Keyloom's offline demo!\n\n"
        f"You said: **“{said}”**\n\n"
        "Nothing left this machine: a simulated Gemini wrote this reply. What the demo shows:\n\n"
        "- **rotation**: one of its three keys is always over quota, so Keyloom moves on to the next;\n"
        "- *streaming* and fake streaming, with keep-alives while the slower model thinks;\n"
        "- Markdown in the chat playground, like this list.\n\n"
        "| model | answers after |\n"
        "|---|---|\n"
        + "".join(f"| `{name}` | {delay:g} s |\n" for name, delay in DELAYS.items())
        + "\nTo talk to Gemini, put real keys in `GEMINI_API_KEYS` and run without `--demo`:\n\n"
        "```bash\n"
        "GEMINI_API_KEYS=AIza...,AIza... python run.py\n"
        "```\n"
    )
    thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    thought = "The user is trying the demo; a friendly reply that says so will do." \
        if thinking.get("includeThoughts") else None
    return text, thought


def _usage(body: dict[str, Any], text: str, thought: str | None) -> dict[str, int]:
    prompt = max(1, len(ujson.dumps(body.get("contents") or [])) // 4)
    out = max(1, len(text) // 4)
    thoughts = len(thought) // 4 if thought else 0
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out + thoughts}
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


class _DemoHandler(tornado.web.RequestHandler):
    def check_key(self) -> bool:
        key = self.request.headers.get("x-goog-api-key", "")
        if key not in DEMO_KEYS:
            self.set_status(400)
            self.finish(_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                               [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]))
            return False
        if key.endswith("over-quota") and self.request.method == "POST":
            self.set_status(429)
            self.finish(_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota (demo).", [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                    {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]))
            return False
        return True


class _Models(_DemoHandler):
    def get(self) -> None:
        if self.check_key():
            self.set_header("Content-Type", "application/json")
            self.finish(ujson.dumps({"models": MODELS}))


class _Generate(_DemoHandler):
    async def post(self, model: str, method: str) -> None:
        if not self.check_key():
            return
        if f"models/{model}" not in {m["name"] for m in MODELS}:
            self.set_status(404)
            self.finish(_error(404, "NOT_FOUND", f"models/{model} is not found (demo)."))
            return
        body = ujson.loads(self.request.body or b"{}")
        text, thought = _answer(body)
        await asyncio.sleep(DELAYS.get(model, 0.3))
        usage = _usage(body, text, thought)
        if method == "generateContent":
            parts = ([{"text": thought, "thought": True}] if thought else []) + [{"text": text}]
            self.set_header("Content-Type", "application/json")
            self.finish(ujson.dumps({"candidates": [{"content": {"role": "model", "parts": parts},
                                                     "finishReason": "STOP", "index": 0}],
                                     "usageMetadata": usage, "modelVersion": model, "responseId": "demo"}))
            return
        self.set_header("Content-Type", "text/event-stream")
        pieces = ([{"text": thought, "thought": True}] if thought else []) + \
            [{"text": w} for w in text.replace(" ", " \x00").split("\x00")]
        for i, part in enumerate(pieces):
            cand: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
            if i == len(pieces) - 1:
                cand["finishReason"] = "STOP"
            event = {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": "demo"}
            self.write(b"data: " + ujson.dumps(event, ensure_ascii=False).encode() + b"\r\n\r\n")
            await self.flush()
            await asyncio.sleep(0.04)
        self.finish()


def _vector(text: str, dims: int) -> list[float]:
    """A stable pseudo-embedding: the same text always gives the same vector (demo only)."""
    seed = hashlib.sha256(text.encode("utf-8")).digest()
    return [round((seed[i % 32] - 128) / 128 * (1 - i / (2 * dims)), 5) for i in range(dims)]


class _Other(_DemoHandler):
    """embedContent, batchEmbedContents and countTokens."""

    def post(self, model: str, method: str) -> None:
        if not self.check_key():
            return
        body = ujson.loads(self.request.body or b"{}")
        self.set_header("Content-Type", "application/json")
        if method == "countTokens":
            self.finish(ujson.dumps({"totalTokens": max(1, len(ujson.dumps(body.get("contents") or [])) // 4)}))
            return
        items = body.get("requests") if method == "batchEmbedContents" else [body]
        out = [{"values": _vector("".join(p.get("text", "") for p in (r.get("content") or {}).get("parts", [])),
                                  int(r.get("outputDimensionality") or 768))} for r in items or []]
        self.finish(ujson.dumps({"embeddings": out} if method == "batchEmbedContents" else {"embedding": out[0]}))


async def start_demo_upstream() -> tuple[str, HTTPServer]:
    """Start the simulated Gemini API on a free loopback port; returns its base URL."""
    app = tornado.web.Application(log_function=lambda handler: None, handlers=[
        (r"/v1beta/models", _Models),
        (r"/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)", _Generate),
        (r"/v1beta/models/([^/:]+):(embedContent|batchEmbedContents|countTokens)", _Other),
    ])
    server = HTTPServer(app)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    return f"http://127.0.0.1:{sockets[0].getsockname()[1]}", server
