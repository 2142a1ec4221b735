"""OpenAI's Images API (`/v1/images/generations`, `/v1/images/edits`) ⇄ Gemini. Pure: dicts in, dicts out.

Two kinds of Google model draw:
- Gemini image models ("Nano Banana": gemini-2.5-flash-image, gemini-3-pro-image-preview, …) through
  generateContent, one image per call, prompt and input images as parts (so they also edit);
- Imagen (imagen-4.0-…) through `:predict`, up to four images per call, from a prompt only.

What OpenAI's fields become:
- `size` → an aspect ratio (both kinds take ratios, not pixels): 1024x1024 → 1:1, 1536x1024 → 3:2, …;
  `auto` or none → the model's default. A size with no close ratio is refused.
- `quality` → Gemini 3 image models' `imageSize` (low/medium/standard → 1K, high/hd → 2K); the others
  ignore it.
- `n` → that many generateContent calls in parallel (Gemini draws one image per call), or Imagen's
  `sampleCount`.
- `response_format`: `b64_json` (the default here). Keyloom hosts nothing, so `url` answers carry the image
  as a `data:` URL: clients that show the URL in a browser or an <img> work; clients that download it with
  an HTTP client do not, and should ask for b64_json.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .gemini_body import SAFETY_CATEGORIES, TranslationError
from .gemini_facts import candidate_parts, image_of

MAX_N = 4  # Imagen's most per call; for Gemini image models, the calls one request may make
MAX_PROMPT = 32_000
RATIOS = {"1:1": 1.0, "2:3": 2 / 3, "3:2": 1.5, "3:4": 0.75, "4:3": 4 / 3, "4:5": 0.8, "5:4": 1.25,
          "9:16": 9 / 16, "16:9": 16 / 9, "21:9": 21 / 9}
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
QUALITY_SIZE = {"low": "1K", "medium": "1K", "standard": "1K", "high": "2K", "hd": "2K"}
FORMATS = ("b64_json", "url")
_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})", re.A)


def _prompt(req: Mapping[str, Any]) -> str:
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise TranslationError("prompt is required: a description of the image", "prompt")
    if len(prompt) > MAX_PROMPT:
        raise TranslationError(f"prompt is longer than {MAX_PROMPT} characters", "prompt")
    return prompt


def count(req: Mapping[str, Any]) -> int:
    n = req.get("n", 1)
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise TranslationError(f"n must be a whole number from 1 to {MAX_N}", "n")
    return n


def response_format(req: Mapping[str, Any]) -> str:
    fmt = req.get("response_format") or "b64_json"
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise TranslationError("response_format must be b64_json or url", "response_format")
    return str(fmt)


def aspect_ratio(size: Any, allowed: tuple[str, ...] | None = None) -> str | None:
    """OpenAI's `size` (WxH, or auto) → the closest aspect ratio the model takes; None: the model's own."""
    if size in (None, "", "auto"):
        return None
    if not isinstance(size, str):
        raise TranslationError("size must be a string such as 1024x1024", "size")
    if size in RATIOS and (allowed is None or size in allowed):
        return size  # Gemini's own form, passed as it is
    m = _SIZE.fullmatch(size.lower())  # ASCII digits, bounded: int() of "²" or of 5 000 digits would raise
    if m is None or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise TranslationError("size must be WIDTHxHEIGHT (such as 1024x1024), an aspect ratio such as 16:9, "
                               "or auto", "size")
    want = int(m.group(1)) / int(m.group(2))
    choices = [r for r in RATIOS if allowed is None or r in allowed]
    best = min(choices, key=lambda r: abs(RATIOS[r] - want) / RATIOS[r])
    if abs(RATIOS[best] - want) / RATIOS[best] > 0.15:  # 3:2 still finds Imagen's 4:3
        raise TranslationError(f"size {size} has no aspect ratio close to it that the model takes "
                               f"({', '.join(choices)})", "size")
    return best


def gemini_request(req: Mapping[str, Any], model: str, images: list[tuple[str, str]] | None = None
                   ) -> dict[str, Any]:
    """One generateContent body for a Gemini image model: the prompt, then any input images (an edit)."""
    parts: list[dict[str, Any]] = [{"text": _prompt(req)}]
    parts += [{"inlineData": {"mimeType": mime, "data": data}} for mime, data in images or ()]
    image_config: dict[str, Any] = {}
    ratio = aspect_ratio(req.get("size"))
    if ratio:
        image_config["aspectRatio"] = ratio
    quality = req.get("quality")
    if quality not in (None, "auto"):
        if not isinstance(quality, str) or quality not in QUALITY_SIZE:
            raise TranslationError("quality must be low, medium, high, standard, hd or auto", "quality")
        if model.lower().startswith("gemini-3"):
            image_config["imageSize"] = QUALITY_SIZE[quality]
    config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    if image_config:
        config["imageConfig"] = image_config
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config,
            "safetySettings": [{"category": c, "threshold": "BLOCK_NONE"} for c in SAFETY_CATEGORIES]}


def imagen_request(req: Mapping[str, Any]) -> dict[str, Any]:
    """The `:predict` body for Imagen: prompt, count and aspect ratio."""
    parameters: dict[str, Any] = {"sampleCount": count(req)}
    ratio = aspect_ratio(req.get("size"), IMAGEN_RATIOS)
    if ratio:
        parameters["aspectRatio"] = ratio
    return {"instances": [{"prompt": _prompt(req)}], "parameters": parameters}


def gemini_images(reply: Mapping[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """(images as (mime, base64), the text the model wrote beside them) of a generateContent reply."""
    images: list[tuple[str, str]] = []
    texts: list[str] = []
    for cand in reply.get("candidates") or ():
        for part in candidate_parts(cand):
            found = image_of(part)
            if found is not None:
                images.append(found)
            elif isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
    return images, "".join(texts).strip()


def imagen_images(reply: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Images of a `:predict` reply (predictions filtered by Imagen's safety come back without bytes)."""
    out = []
    for p in reply.get("predictions") or ():
        if isinstance(p, dict) and isinstance(p.get("bytesBase64Encoded"), str) and p["bytesBase64Encoded"]:
            out.append((str(p.get("mimeType") or "image/png"), p["bytesBase64Encoded"]))
    return out


def images_response(images: list[tuple[str, str]], *, created: int, fmt: str, revised_prompt: str = "",
                    usage: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's ImagesResponse."""
    data = []
    for mime, b64 in images:
        item: dict[str, Any] = {"b64_json": b64} if fmt == "b64_json" else {"url": f"data:{mime};base64,{b64}"}
        if revised_prompt:
            item["revised_prompt"] = revised_prompt
        data.append(item)
    out: dict[str, Any] = {"created": created, "data": data}
    if images:
        mime = images[0][0]
        out["output_format"] = mime.removeprefix("image/").replace("jpg", "jpeg")
    if usage:
        out["usage"] = dict(usage)
    return out
