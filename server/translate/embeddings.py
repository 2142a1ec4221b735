"""OpenAI embeddings ⇄ Gemini batchEmbedContents, as plain functions.

Gemini takes at most 100 texts per batch and returns no token usage; OpenAI clients send up
to 2048 inputs and read `usage`. So a request becomes ordered batches of ≤100, their vectors
are put back in order, and usage is an estimate. `encoding_format: "base64"` (what the official
SDK sends unless told otherwise) is a little-endian float32 array, base64-encoded.
"""
from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_BATCH = 100      # Gemini: "at most 100 requests can be in one batch"
MAX_INPUTS = 2048    # OpenAI's limit on one request
MAX_DIMENSIONS = 3072


class EmbeddingError(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class EmbeddingPlan:
    requested: str            # the model id the client asked for (shown back)
    model: str                # the Gemini model
    inputs: list[str]
    dimensions: int | None
    encoding: str             # float | base64
    single: bool              # input was one string


def parse(req: Any, model_map: Mapping[str, str]) -> EmbeddingPlan:
    if not isinstance(req, dict):
        raise EmbeddingError("the request body must be a JSON object")
    model = req.get("model")
    if not isinstance(model, str) or not model.strip():
        raise EmbeddingError("model is required (e.g. gemini-embedding-001)", "model")
    requested = model.strip()
    target = model_map.get(requested, requested)
    if target.startswith("models/"):
        target = target[len("models/"):]
    raw = req.get("input")
    if isinstance(raw, str):
        inputs, single = [raw], True
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs, single = list(raw), False
    elif isinstance(raw, list) and raw and all(isinstance(x, int) or isinstance(x, list) for x in raw):
        raise EmbeddingError("input as token arrays is not supported: Gemini embeds text only. Send the text "
                             "as a string or a list of strings.", "input")
    else:
        raise EmbeddingError("input must be a non-empty string or a non-empty list of strings", "input")
    if len(inputs) > MAX_INPUTS:
        raise EmbeddingError(f"input holds {len(inputs)} items; at most {MAX_INPUTS} are accepted", "input")
    for i, text in enumerate(inputs):
        if not text:
            raise EmbeddingError(f"input[{i}] is empty; every input must hold some text", "input")
    dims = req.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSIONS):
        raise EmbeddingError(f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}", "dimensions")
    encoding = req.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise EmbeddingError("encoding_format must be float or base64", "encoding_format")
    return EmbeddingPlan(requested, target, inputs, dims, encoding, single)


def batches(plan: EmbeddingPlan) -> list[dict[str, Any]]:
    """Gemini batchEmbedContents bodies, ≤100 texts each, in input order."""
    out = []
    for start in range(0, len(plan.inputs), MAX_BATCH):
        reqs = []
        for text in plan.inputs[start:start + MAX_BATCH]:
            r: dict[str, Any] = {"model": f"models/{plan.model}", "content": {"parts": [{"text": text}]}}
            if plan.dimensions is not None:
                r["outputDimensionality"] = plan.dimensions
            reqs.append(r)
        out.append({"requests": reqs})
    return out


def vectors(reply: Any, expected: int) -> list[list[float]]:
    """The vectors of one batch reply; raises ValueError when the reply does not hold `expected` of them."""
    items = reply.get("embeddings") if isinstance(reply, dict) else None
    if not isinstance(items, list) or len(items) != expected:
        raise ValueError(f"Gemini returned {len(items) if isinstance(items, list) else 'no'} embeddings "
                         f"for {expected} inputs")
    out = []
    for item in items:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
            raise ValueError("Gemini returned an embedding without numeric values")
        out.append(values)
    return out


def estimate_tokens(text: str) -> int:
    """Gemini returns no usage: about four ASCII characters per token, one per other character."""
    ascii_chars = sum(1 for ch in text if ord(ch) < 128)
    return max(1, math.ceil(ascii_chars / 4) + (len(text) - ascii_chars))


def encode_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def response(plan: EmbeddingPlan, vecs: list[list[float]]) -> dict[str, Any]:
    """`CreateEmbeddingResponse`."""
    tokens = sum(estimate_tokens(t) for t in plan.inputs)
    data = [{"object": "embedding", "index": i,
             "embedding": encode_base64(v) if plan.encoding == "base64" else v} for i, v in enumerate(vecs)]
    return {"object": "list", "data": data, "model": plan.requested,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
