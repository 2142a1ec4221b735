"""A real HTTP fake of the Gemini API (v1beta), following Google's API reference (https://ai.google.dev/api) and the
replies other projects recorded (tests/data/gemini_corpus).

- `GET /v1beta/models` with `pageSize`/`pageToken` pagination;
- `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`
  (events framed with `\\r\\n\\r\\n`, cumulative usageMetadata, finishReason on the last event);
- the error bodies of §7, chosen per key (`keys[key] = "invalid" | "suspended" | …`) or scripted;
- adjustable latency, scripted replies, a record of every request (with the key used),
  counts of TCP connections accepted and of requests whose client went away.

Run on its own (for the benchmark and by hand): `python -m tests.fake_gemini --port 8099`.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tornado.web
import ujson
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

DEFAULT_MODELS: list[dict[str, Any]] = [
    {"name": "models/gemini-2.0-flash", "displayName": "Gemini 2.0 Flash", "outputTokenLimit": 8192,
     "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent"]},
    {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash", "outputTokenLimit": 65536,
     "thinking": True, "supportedGenerationMethods": ["generateContent", "countTokens", "batchGenerateContent"]},
    {"name": "models/gemini-2.5-flash-lite", "displayName": "Gemini 2.5 Flash-Lite", "outputTokenLimit": 65536,
     "thinking": True, "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/gemini-2.5-pro", "displayName": "Gemini 2.5 Pro", "outputTokenLimit": 65536,
     "thinking": True, "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/gemini-3-pro-preview", "displayName": "Gemini 3 Pro Preview", "outputTokenLimit": 65536,
     "thinking": True, "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/gemma-3-27b-it", "displayName": "Gemma 3 27B",
     "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/gemini-embedding-001", "displayName": "Gemini Embedding 001",
     "supportedGenerationMethods": ["embedContent", "countTextTokens"]},
    {"name": "models/text-embedding-004", "displayName": "Text Embedding 004",
     "supportedGenerationMethods": ["embedContent"]},
]


# -- error bodies (reference §7) -----------------------------------------------------------------

def error_body(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return {"error": err}


def invalid_key_body() -> dict[str, Any]:
    return error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
         "message": "API key not valid. Please pass a valid API key."}])


def suspended_body(key: str) -> dict[str, Any]:
    return error_body(403, "PERMISSION_DENIED", f"Permission denied: Consumer 'api_key:{key}' has been suspended.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CONSUMER_SUSPENDED",
         "domain": "googleapis.com", "metadata": {"consumer": f"projects/0/apiKeys/{key}"}}])


def leaked_body() -> dict[str, Any]:
    return error_body(403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key.")


def quota_body(model: str, per: str = "minute", retry: str = "47s", value: int | None = None,
               project: str | None = None) -> dict[str, Any]:
    """Google's 429. With `value`, the violation carries `quotaValue` (the limit, as newer bodies do); with
    `project`, an ErrorInfo names the consumer project (`projects/N`) and the message its number, as Google's
    quota errors do ("… for consumer 'project_number:N'")."""
    body = _quota_body(model, per, retry)
    err = body["error"]
    if value is not None:
        err["details"][1]["violations"][0]["quotaValue"] = str(value)
        err["message"] = err["message"].replace(f"limit: {10 if per == 'minute' else 250},", f"limit: {value},")
    if project is not None:
        err["message"] += f" Quota exceeded for consumer 'project_number:{project}'."
        err["details"].append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
                               "domain": "googleapis.com",
                               "metadata": {"consumer": f"projects/{project}",
                                            "service": "generativelanguage.googleapis.com"}})
    return body


def service_disabled_body(project: str) -> dict[str, Any]:
    """403 SERVICE_DISABLED: the Generative Language API is not enabled in the key's project (as recorded in
    tests/data/gemini_corpus/47-error-403-api-not-enabled.json)."""
    url = f"https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project={project}"
    return error_body(403, "PERMISSION_DENIED",
                      f"Generative Language API has not been used in project {project} before or it is disabled. "
                      f"Enable it by visiting {url} then retry. If you enabled this API recently, wait a few minutes "
                      "for the action to propagate to our systems and retry.", [
                          {"@type": "type.googleapis.com/google.rpc.Help",
                           "links": [{"description": "Google developers console API activation", "url": url}]},
                          {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                           "domain": "googleapis.com",
                           "metadata": {"service": "generativelanguage.googleapis.com",
                                        "consumer": f"projects/{project}"}}])


def _quota_body(model: str, per: str = "minute", retry: str = "47s") -> dict[str, Any]:
    quota_id = ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier" if per == "minute"
                else "GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    limit = 10 if per == "minute" else 250  # the free tier's; "limit: 0" is Google's word for "no free tier"
    return error_body(429, "RESOURCE_EXHAUSTED",
                      "You exceeded your current quota, please check your plan and billing details. For more "
                      "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n"
                      "* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_"
                      f"requests, limit: {limit}, model: {model}\nPlease retry in {retry.rstrip('s')}s.", [
                          {"@type": "type.googleapis.com/google.rpc.Help",
                           "links": [{"description": "Learn more about Gemini API quotas",
                                      "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                          {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                              {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                               "quotaId": quota_id, "quotaDimensions": {"location": "global", "model": model}}]},
                          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry}])


def internal_body() -> dict[str, Any]:
    return error_body(500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                                       "https://developers.generativeai.google/guide/troubleshooting")


def overloaded_body() -> dict[str, Any]:
    return error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def not_found_body(model: str) -> dict[str, Any]:
    return error_body(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not supported "
                                        "for generateContent. Call ListModels to see the list of available models "
                                        "and their supported methods.")


def bad_request_body(message: str) -> dict[str, Any]:
    return error_body(400, "INVALID_ARGUMENT", message)


KEY_BEHAVIOURS: dict[str, Callable[[str, str], tuple[int, dict[str, Any]]]] = {
    "invalid": lambda key, model: (400, invalid_key_body()),
    "suspended": lambda key, model: (403, suspended_body(key)),
    "leaked": lambda key, model: (403, leaked_body()),
    "quota_minute": lambda key, model: (429, quota_body(model, "minute", "47s")),
    "quota_day": lambda key, model: (429, quota_body(model, "day", "3600s")),
    "overloaded": lambda key, model: (503, overloaded_body()),
    "internal": lambda key, model: (500, internal_body()),
}
ALWAYS = frozenset({"invalid", "suspended", "leaked", "service_disabled"})  # these also refuse model listing
DEFAULT_PROJECT = "123456789012"


# -- replies -------------------------------------------------------------------------------------

def text_reply(text: str, *, thought: str | None = None, finish: str = "STOP", prompt_tokens: int = 10,
               thoughts_tokens: int = 0, response_id: str = "fakeResponseId") -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if thought:
        parts.append({"text": thought, "thought": True})
    if text:
        parts.append({"text": text})
    out_tokens = max(1, len(text.split())) if text else 0
    usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": out_tokens,
             "totalTokenCount": prompt_tokens + out_tokens + thoughts_tokens,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]}
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    return {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage, "modelVersion": "gemini-2.5-flash", "responseId": response_id}


# What Gemini sends is opaque base64 (google-genai decodes it into bytes, and refuses a whole reply whose
# signature is not canonical base64).
DEFAULT_SIGNATURE = base64.b64encode(b"\n)\x01r\xc8\xda}fake-thought-signature").decode()


def function_call_reply(name: str, args: dict[str, Any], signature: str | None = DEFAULT_SIGNATURE) -> dict:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature:
        part["thoughtSignature"] = signature
    return {"candidates": [{"content": {"parts": [part], "role": "model"}, "finishReason": "STOP", "index": 0,
                            "finishMessage": "Model generated function call(s)."}],
            "usageMetadata": {"promptTokenCount": 83, "candidatesTokenCount": 14, "totalTokenCount": 201,
                              "thoughtsTokenCount": 104},
            "modelVersion": "gemini-2.5-flash", "responseId": "fakeFnCall"}


PLACEHOLDER_SIGNATURE = "skip_thought_signature_validator"  # Google's documented placeholder


def key_signature(key: str) -> str:
    """With `bind_signatures`, the signature the fake gives a function call answered with `key`: opaque base64
    that, like Gemini 3's, only the account that issued it accepts back."""
    return base64.b64encode(b"fake-sig:" + hashlib.sha256(key.encode()).digest()[:9]).decode()


def foreign_signature(body: Any, key: str) -> bool:
    """True when a function call in the request's history carries a signature this fake issued to another
    key (Gemini answers that with 400 "Corrupted thought signature."); the placeholder is accepted."""
    mine = key_signature(key)
    for content in (body.get("contents") or []) if isinstance(body, dict) else []:
        for part in content.get("parts") or []:
            sig = wire_field(part, "thoughtSignature") if isinstance(part, dict) else None
            if isinstance(sig, str) and sig != mine and sig != PLACEHOLDER_SIGNATURE and \
                    base64.b64decode(sig + "==", validate=False).startswith(b"fake-sig:"):
                return True
    return False


def with_key_signatures(reply: Any, key: str) -> Any:
    """The reply with each signed part's signature replaced by `key`'s (see `key_signature`)."""
    if not isinstance(reply, dict):
        return reply
    out = ujson.loads(ujson.dumps(reply))
    for cand in out.get("candidates") or []:
        for part in (cand.get("content") or {}).get("parts") or []:
            if "thoughtSignature" in part:
                part["thoughtSignature"] = key_signature(key)
    return out


def stream_events(reply: dict[str, Any], pieces: int = 3) -> list[dict[str, Any]]:
    """Split a whole reply into SSE events as Gemini sends them: text deltas, cumulative usage,
    finishReason only on the last event, function calls whole."""
    if not reply.get("candidates"):
        return [reply]  # a blocked prompt: one event holding promptFeedback
    cand = reply["candidates"][0]
    parts = cand.get("content", {}).get("parts", [])
    deltas: list[dict[str, Any]] = []
    for p in parts:
        if "text" in p and not p.get("thought"):
            words = p["text"].split(" ")
            size = max(1, -(-len(words) // pieces))
            for i in range(0, len(words), size):
                chunk = " ".join(words[i:i + size]) + (" " if i + size < len(words) else "")
                deltas.append({"text": chunk})
        else:
            deltas.append(p)
    if not deltas:
        deltas = [None]  # type: ignore[list-item]
    usage = dict(reply.get("usageMetadata", {}))
    total_out = usage.get("candidatesTokenCount", 0)
    events = []
    for i, d in enumerate(deltas):
        c: dict[str, Any] = {"content": {"parts": [d] if d else [], "role": "model"}, "index": 0}
        last = i == len(deltas) - 1
        if last:
            c["finishReason"] = cand.get("finishReason", "STOP")
            if "groundingMetadata" in cand:  # Gemini sends the grounding with the final event
                c["groundingMetadata"] = cand["groundingMetadata"]
        u = dict(usage)
        u["candidatesTokenCount"] = total_out if last else max(1, total_out * (i + 1) // len(deltas))
        events.append({"candidates": [c], "usageMetadata": u, "modelVersion": reply.get("modelVersion"),
                       "responseId": reply.get("responseId")})
    return events


def frame(event: Any) -> bytes:
    # Gemini's own framing: a space after ':' and CRLF CRLF between events.
    return b"data: " + ujson.dumps(event, ensure_ascii=False).encode() + b"\r\n\r\n"


@dataclass
class Reply:
    """One scripted answer to a generate/stream call."""

    status: int = 200
    body: Any = None                       # JSON (dict/list) or bytes; None → the default echo reply
    events: list[Any] | None = None        # streaming: events to send (dicts, or raw bytes)
    delay: float = 0.0                     # seconds before the response head
    event_delay: float = 0.0               # streaming: seconds between events
    close_early: bool = False              # drop the connection without answering
    raw: bytes | None = None               # write these bytes as the whole answer, then drop the connection
    reset_after_events: bool = False       # streaming: drop the connection after the events, no clean end
    headers: dict[str, str] = field(default_factory=dict)
    # streaming: after the first `hold_after` events, wait until another thread releases `hold` once (so a
    # test can go on when a client has shown what it got so far, not after a guessed time)
    hold: threading.Semaphore | None = None
    hold_after: int = 1
    # before answering at all: wait until another thread sets `gate` (a test's own sequence point, not a time)
    gate: threading.Event | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    key: str | None
    model: str | None
    action: str | None
    body: Any
    time: float
    raw: bytes = b""
    peer: tuple[str, int] | None = None  # the caller's address: which proxy carried it (tests/test_proxies_per_key.py)


def wire_field(obj: Any, name: str) -> Any:
    """A request field by its JSON name, in camelCase or in snake_case: the Gemini API takes both (proto JSON
    names), and clients send both (google-genai: `thinkingConfig: {"include_thoughts": …}`; LiteLLM:
    `system_instruction`, `generationConfig: {"max_output_tokens": …}`)."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    return obj.get(re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name))


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            texts = [p.get("text", "") for p in content.get("parts") or [] if isinstance(p, dict) and "text" in p]
            if texts:
                return " ".join(texts)
    return ""


WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


def bench_params(model: str) -> dict[str, float] | None:
    """Models named `bench-<name>-<value>-…` shape the default reply for benchmarks:
    words (answer length), pieces (stream events), wait (seconds before answering),
    gap (milliseconds between stream events). Any such model exists without being listed."""
    if not model.startswith("bench-"):
        return None
    parts = model.split("-")[1:]
    params: dict[str, float] = {}
    for name, value in zip(parts[::2], parts[1::2], strict=False):
        try:
            params[name] = float(value)
        except ValueError:
            pass
    return params


def default_reply(body: dict[str, Any], model: str) -> dict[str, Any]:
    bench = bench_params(model)
    if bench and bench.get("words"):
        n = int(bench["words"])
        return text_reply(" ".join(WORDS[i % len(WORDS)] for i in range(n)), prompt_tokens=10)
    thinking = wire_field(wire_field(body, "generationConfig"), "thinkingConfig")
    thought = "Thinking about the question." if wire_field(thinking, "includeThoughts") else None
    reply = text_reply(f"Echo: {last_user_text(body)}", thought=thought, thoughts_tokens=5 if thought else 0)
    reply["modelVersion"] = model
    return reply


class FakeGemini:
    def __init__(self, models: list[dict[str, Any]] | None = None):
        self.models = models if models is not None else list(DEFAULT_MODELS)
        self.keys: dict[str, str] = {}
        self.projects: dict[str, str] = {}  # key → Google Cloud project number its errors name (service_disabled)
        self.key_model: dict[tuple[str, str], str] = {}  # (key, model) → behaviour, before `keys`
        self.unknown_key = "invalid"          # behaviour for keys not in `keys`; "ok" accepts any key
        self.script: collections.deque[Reply] = collections.deque()
        self.responder: Callable[[Recorded], Reply | None] | None = None
        self.latency = 0.0
        self.requests: list[Recorded] = []
        self.connections = 0
        self.cancelled = 0
        self.page_size = 50
        self.record = True  # keep every request (tests); off for long benchmark runs
        self.mode = ""  # free for tests to note what they are doing
        # signatures bound to the key that earned them, as Gemini 3's are (see `key_signature`)
        self.bind_signatures = False
        self.server: HTTPServer | None = None
        self.base_url = ""
        # Vertex AI: service-account public keys by email, issued access tokens, express keys
        self.sa_public_keys: dict[str, bytes] = {}
        self.vertex_tokens: dict[str, str] = {}  # token → service-account email
        self.token_ttl = 3600
        self.token_requests = 0
        self.token_delay = 0.0

    def reset(self) -> None:
        self.keys.clear()
        self.projects.clear()
        self.key_model.clear()
        self.unknown_key = "invalid"
        self.script.clear()
        self.responder = None
        self.latency = 0.0
        self.requests.clear()
        self.connections = 0
        self.cancelled = 0
        self.page_size = 50
        self.bind_signatures = False
        self.vertex_tokens.clear()
        self.token_ttl = 3600
        self.token_requests = 0
        self.token_delay = 0.0

    def allow(self, *keys: str, behaviour: str = "ok") -> None:
        for k in keys:
            self.keys[k] = behaviour

    def generate_calls(self, model: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if r.action in ("generateContent", "streamGenerateContent")
                and (model is None or r.model == model)]

    async def start_tls(self, ssl_context: Any, port: int = 0) -> str:
        """Serve over TLS (the certificate must name `localhost`); returns an https:// base URL."""
        url = await self.start(port, "127.0.0.1", ssl_context)
        self.base_url = url.replace("http://127.0.0.1", "https://localhost")
        return self.base_url

    async def start(self, port: int = 0, host: str = "127.0.0.1", ssl_context: Any = None) -> str:
        fake = self

        class CountingServer(HTTPServer):
            def handle_stream(self, stream: Any, address: Any) -> None:
                fake.connections += 1
                super().handle_stream(stream, address)

        app = tornado.web.Application([
            (r"/v1beta/models", ModelsHandler, {"fake": self}),
            (r"/v1beta/models/([^/:]+):(\w+)", GenerateHandler, {"fake": self}),
            (r"/v1/projects/[^/]+/locations/[^/]+/publishers/google/models/([^/:]+):(\w+)", VertexHandler,
             {"fake": self}),
            (r"/v1/publishers/google/models/([^/:]+):(\w+)", VertexHandler, {"fake": self}),
            (r"/token", TokenHandler, {"fake": self}),
        ], log_function=lambda handler: None)
        self.server = CountingServer(app, max_body_size=256 * 1024 * 1024, max_buffer_size=256 * 1024 * 1024,
                                     ssl_options=ssl_context)
        sockets = bind_sockets(port, host)
        self.server.add_sockets(sockets)
        self.base_url = f"http://{host}:{sockets[0].getsockname()[1]}"
        return self.base_url

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()


def _peer(request: Any) -> tuple[str, int] | None:
    address = getattr(getattr(request.connection, "context", None), "address", None)
    return (str(address[0]), int(address[1])) if isinstance(address, tuple) and len(address) >= 2 else None


class _Base(tornado.web.RequestHandler):
    def initialize(self, fake: FakeGemini) -> None:
        self.fake = fake
        self.done = False

    def record(self, model: str | None, action: str | None) -> Recorded:
        key = self.request.headers.get("x-goog-api-key") or self.get_query_argument("key", None)
        body = None
        if self.request.body:
            try:
                body = ujson.loads(self.request.body)
            except ValueError:
                body = self.request.body
        rec = Recorded(self.request.method, self.request.path,
                       {k: v[-1].decode() for k, v in self.request.query_arguments.items()},
                       key, model, action, body, time.time(), self.request.body, _peer(self.request))
        if self.fake.record:
            self.fake.requests.append(rec)
        return rec

    def behaviour(self, key: str | None, model: str = "") -> str:
        if key is None:
            return "missing"
        if (key, model) in self.fake.key_model:
            return self.fake.key_model[(key, model)]
        return self.fake.keys.get(key, self.fake.unknown_key)

    def send_json(self, status: int, body: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(body if isinstance(body, bytes) else ujson.dumps(body, ensure_ascii=False))

    def refuse(self, key: str | None, model: str, behaviour: str) -> bool:
        if behaviour == "ok":
            return False
        if behaviour == "missing":
            self.send_json(403, error_body(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers "
                                           "(callers without established identity). Please use API Key or other "
                                           "form of API consumer identity to call this API."))
            return True
        if behaviour == "service_disabled":  # names the key's project (`fake.projects`)
            self.send_json(403, service_disabled_body(self.fake.projects.get(key or "", DEFAULT_PROJECT)))
            return True
        status, body = KEY_BEHAVIOURS[behaviour](key or "", model)
        self.send_json(status, body)
        return True

    def on_connection_close(self) -> None:
        if not self.done:
            self.fake.cancelled += 1

    def on_finish(self) -> None:
        self.done = True


class ModelsHandler(_Base):
    async def get(self) -> None:
        rec = self.record(None, "listModels")
        behaviour = self.behaviour(rec.key)
        if behaviour in ALWAYS or behaviour == "missing":
            self.refuse(rec.key, "", behaviour)
            return
        size = int(self.get_query_argument("pageSize", str(self.fake.page_size)))
        size = max(1, min(size, self.fake.page_size))
        start = int(self.get_query_argument("pageToken", "0") or 0)
        page = self.fake.models[start:start + size]
        out: dict[str, Any] = {"models": page}
        if start + size < len(self.fake.models):
            out["nextPageToken"] = str(start + size)
        self.send_json(200, out)


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic embedding of `text` (tests can recompute it)."""
    out: list[float] = []
    i = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{text}|{i}".encode()).digest()
        out.extend(round((b - 128) / 128, 4) for b in digest)
        i += 1
    return out[:dims]


EMBED_DIMS = 8


def fake_png(prompt: str, i: int = 0) -> str:
    """Base64 of a small "image" that names its prompt (not a real PNG: tests compare it, nobody views it)."""
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + f"{prompt}#{i}".encode()).decode()


def image_reply(prompt: str, i: int = 0, text: str = "") -> dict[str, Any]:
    """What a Gemini image model answers: maybe a line of text, then the image as inlineData."""
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    parts.append({"inlineData": {"mimeType": "image/png", "data": fake_png(prompt, i)}})
    return {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1290, "totalTokenCount": 1297},
            "modelVersion": "gemini-2.5-flash-image"}


def speech_reply(pcm: bytes, rate: int = 24000) -> dict[str, Any]:
    """What a Gemini TTS model answers: raw 16-bit PCM as inlineData."""
    return {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": f"audio/L16;codec=pcm;rate={rate}",
                                                                   "data": base64.b64encode(pcm).decode()}}],
                                        "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 40, "totalTokenCount": 49},
            "modelVersion": "gemini-2.5-flash-preview-tts"}


MEDIA_MODELS: list[dict[str, Any]] = [
    {"name": "models/gemini-2.5-flash-image", "displayName": "Nano Banana",
     "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/gemini-3-pro-image-preview", "displayName": "Nano Banana Pro",
     "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/gemini-2.5-flash-preview-tts", "displayName": "Gemini 2.5 Flash TTS",
     "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/imagen-4.0-generate-001", "displayName": "Imagen 4", "supportedGenerationMethods": ["predict"]},
]


class GenerateHandler(_Base):
    def embed(self, model: str, action: str, body: Any) -> None:
        if f"models/{model}" not in {m["name"] for m in self.fake.models}:
            self.send_json(404, not_found_body(model))
            return
        items = [body] if action == "embedContent" else (body or {}).get("requests")
        if not isinstance(items, list) or not items:
            self.send_json(400, bad_request_body("* BatchEmbedContentsRequest.requests: requests is empty"))
            return
        if len(items) > 100:
            self.send_json(400, bad_request_body(
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"))
            return
        vectors = []
        for item in items:
            if action == "batchEmbedContents" and item.get("model") != f"models/{model}":
                self.send_json(400, bad_request_body("* BatchEmbedContentsRequest.requests[0].model: "
                                                     "model must match the batch model"))
                return
            parts = ((item.get("content") or {}).get("parts") or [{}])
            text = "".join(p.get("text", "") for p in parts)
            vectors.append({"values": fake_vector(text, int(wire_field(item, "outputDimensionality") or EMBED_DIMS))})
        self.send_json(200, {"embedding": vectors[0]} if action == "embedContent" else {"embeddings": vectors})

    async def post(self, model: str, action: str) -> None:
        rec = self.record(model, action)
        if action not in ("generateContent", "streamGenerateContent", "countTokens", "embedContent",
                          "batchEmbedContents", "predict"):
            self.send_json(404, error_body(404, "NOT_FOUND", f"unknown method {action}"))
            return
        if self.refuse(rec.key, model, self.behaviour(rec.key, model)):
            return
        if action in ("embedContent", "batchEmbedContents"):
            if self.fake.script and self.fake.script[0].status != 200:  # scripted failures apply here too
                reply = self.fake.script.popleft()
                self.send_json(reply.status, reply.body if reply.body is not None else internal_body())
                return
            self.embed(model, action, rec.body)
            return
        if action == "predict":  # Imagen: scripted replies apply; else `sampleCount` images of the prompt
            if f"models/{model}" not in {m["name"] for m in self.fake.models}:
                self.send_json(404, not_found_body(model))
                return
            if self.fake.script:
                scripted = self.fake.script.popleft()
                self.send_json(scripted.status, scripted.body)
                return
            body = rec.body if isinstance(rec.body, dict) else {}
            prompt = str(((body.get("instances") or [{}])[0] or {}).get("prompt", ""))
            n = int((body.get("parameters") or {}).get("sampleCount") or 1)
            self.send_json(200, {"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": fake_png(prompt, i)}
                                                 for i in range(n)]})
            return
        if action == "countTokens":
            body = rec.body if isinstance(rec.body, dict) else {}
            contents = body.get("contents") or wire_field(wire_field(body, "generateContentRequest"), "contents") or []
            words = sum(len(str(p.get("text", "")).split()) for c in contents for p in c.get("parts", []))
            self.send_json(200, {"totalTokens": words, "promptTokensDetails": [{"modality": "TEXT",
                                                                                "tokenCount": words}]})
            return
        bench = bench_params(model)
        if bench is None and f"models/{model}" not in {m["name"] for m in self.fake.models}:
            self.send_json(404, not_found_body(model))
            return
        if not isinstance(rec.body, dict) or not rec.body.get("contents"):
            self.send_json(400, bad_request_body("* GenerateContentRequest.contents: contents is not specified"))
            return
        if self.fake.bind_signatures and foreign_signature(rec.body, rec.key or ""):
            self.send_json(400, bad_request_body("Corrupted thought signature."))
            return
        reply = None
        if self.fake.responder is not None:
            reply = self.fake.responder(rec)
        if reply is None and self.fake.script:
            reply = self.fake.script.popleft()
        reply = reply or Reply()
        delay = reply.delay + self.fake.latency + (bench or {}).get("wait", 0.0)
        if delay:
            await asyncio.sleep(delay)
        if reply.gate is not None:
            await asyncio.to_thread(reply.gate.wait, 60)
        if reply.close_early:
            self.request.connection.stream.close()
            return
        if reply.raw is not None:
            stream = self.request.connection.stream
            await stream.write(reply.raw)
            stream.close()
            return
        for k, v in reply.headers.items():
            self.set_header(k, v)
        if reply.status != 200:
            self.send_json(reply.status, reply.body if reply.body is not None else internal_body())
            return
        body = reply.body if reply.body is not None else default_reply(rec.body, model)
        if self.fake.bind_signatures:
            body = with_key_signatures(body, rec.key or "")
        if action == "generateContent":
            self.send_json(200, body)
            return
        if self.get_query_argument("alt", None) != "sse":
            self.send_json(200, [body])  # alt=json: one JSON array
            return
        pieces = int((bench or {}).get("pieces", 3))
        events = reply.events if reply.events is not None else stream_events(body, pieces)
        gap = reply.event_delay or (bench or {}).get("gap", 0.0) / 1000
        self.set_header("Content-Type", "text/event-stream")
        try:
            for i, event in enumerate(events):
                if i and gap:
                    await asyncio.sleep(gap)
                self.write(event if isinstance(event, bytes) else frame(event))
                await self.flush()
                if reply.hold is not None and i + 1 == reply.hold_after:
                    await asyncio.to_thread(reply.hold.acquire, True, 60)
        except StreamClosedError:
            return
        if reply.reset_after_events:
            self.request.connection.stream.close()
            return
        self.finish()


class VertexHandler(GenerateHandler):
    """Vertex AI's generate/stream/count/embed: a service account's Bearer token (issued by /token) or an
    express key in x-goog-api-key. Replies are the Gemini API's. A Recorded key is `sa:<email>` or the
    express key, so tests set behaviours on those."""

    def record(self, model: str | None, action: str | None) -> Recorded:
        rec = super().record(model, action)
        auth = self.request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            email = self.fake.vertex_tokens.get(auth[7:])
            rec.key = f"sa:{email}" if email else "sa-token-rejected"
        return rec

    def behaviour(self, key: str | None, model: str = "") -> str:
        if key == "sa-token-rejected":
            return "unauthenticated"
        if key is not None and key.startswith("sa:") and key not in self.fake.keys:
            return "ok"
        return super().behaviour(key, model)

    def refuse(self, key: str | None, model: str, behaviour: str) -> bool:
        if behaviour == "unauthenticated":
            self.send_json(401, error_body(401, "UNAUTHENTICATED", "Request had invalid authentication "
                                           "credentials. Expected OAuth 2 access token."))
            return True
        return super().refuse(key, model, behaviour)


class TokenHandler(_Base):
    """Google's OAuth token endpoint for service accounts: checks the JWT's signature against the
    account's public key, returns an access token valid for `token_ttl` seconds."""

    async def post(self) -> None:
        from urllib.parse import parse_qs

        import google.auth.jwt
        self.fake.token_requests += 1
        if self.fake.token_delay:
            await asyncio.sleep(self.fake.token_delay)
        form = {k: v[-1] for k, v in parse_qs(self.request.body.decode()).items()}
        assertion = form.get("assertion", "")
        try:
            claims = google.auth.jwt.decode(assertion, verify=False)
            pem = self.fake.sa_public_keys[claims["iss"]]
            google.auth.jwt.decode(assertion, certs=pem.decode(),
                                   audience=[f"{self.fake.base_url}/token", "https://oauth2.googleapis.com/token"])
        except Exception as e:
            self.send_json(400, {"error": "invalid_grant", "error_description": f"bad assertion: {e}"})
            return
        token = f"ya29.fake-{self.fake.token_requests}"
        self.fake.vertex_tokens[token] = claims["iss"]
        self.send_json(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.fake.token_ttl})


def make_service_account(fake: FakeGemini, email: str = "keyloom-test@proj-1.iam.gserviceaccount.com",
                         project: str = "proj-1") -> dict[str, Any]:
    """A real service-account key (RSA 2048, generated now) whose token_uri is the fake's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    fake.sa_public_keys[email] = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"type": "service_account", "project_id": project, "private_key_id": hashlib.sha1(pem.encode()).hexdigest(),
            "private_key": pem, "client_email": email, "client_id": "1234567890",
            "token_uri": f"{fake.base_url}/token"}


def main() -> None:  # pragma: no cover - manual and benchmark use
    p = argparse.ArgumentParser(description="Fake Gemini API")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--record", action="store_true", help="keep every request in memory (off: benchmarks)")
    args = p.parse_args()

    async def run() -> None:
        fake = FakeGemini()
        fake.unknown_key = "ok"
        fake.latency = args.latency
        fake.record = args.record
        url = await fake.start(args.port, args.host)
        print(f"fake Gemini listening on {url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":  # pragma: no cover
    main()
