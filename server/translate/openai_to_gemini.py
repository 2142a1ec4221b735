"""OpenAI chat request → Gemini `GenerateContentRequest`. Pure: dicts in, dicts out, no I/O.

Rules (from the GenerateContentRequest reference, https://ai.google.dev/api/generate-content, and what
SillyTavern sends, https://github.com/SillyTavern/SillyTavern/blob/release/src/endpoints/backends/chat-completions.js):
- every `system`/`developer` message, wherever it stands, goes to `systemInstruction`
  (its `name` kept as a prefix); models without system instructions (Gemma) get it as
  the first user turn;
- `assistant` → `model`; consecutive same-role turns are merged, as Gemini wants turns to alternate;
- tool calls and results become `functionCall` / `functionResponse`; the function name of a
  result is recovered from the call id; a thought signature rides inside the call id so the
  next turn can hand it back (Gemini 3 requires it);
- remote images must have been fetched before (the caller passes them in `images`).
Unknown fields (and `logit_bias: {}`) are ignored, never rejected.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import ujson

from .gemini_body import (  # noqa: F401 - DUMMY_SIGNATURE, SAFETY_CATEGORIES: re-exported for callers
    DUMMY_SIGNATURE,
    NO_EXTRAS,
    SAFETY_CATEGORIES,
    Extras,
    TranslationError,
    finish_body,
    place_system,
    request_body,
    thinking_config,
)
from .schema import Budget, SchemaError, is_empty_object, to_gemini_schema
from .traits import ModelTraits

MAX_STOP_SEQUENCES = 5
MAX_CANDIDATES = 8
THOUGHT_SEP = "__thought__"
GEMINI_ID_SEP = "__id__"


# -- tool call ids ------------------------------------------------------------------------------

# An OpenAI tool-call id carries what Gemini needs back on the next turn, so that a client that stores
# nothing but the conversation (every OpenAI client) still sends it: Gemini's own call id (Gemini 3 gives
# one; it goes back on the functionCall and on the matching functionResponse) and the thought signature.
# call_<random>[__id__<gemini id>][__thought__<signature>]

def make_tool_call_id(random_part: str, signature: str | None, gemini_id: str | None = None) -> str:
    base = f"call_{random_part}" + (f"{GEMINI_ID_SEP}{gemini_id}" if gemini_id else "")
    return f"{base}{THOUGHT_SEP}{signature}" if signature else base


def split_tool_call_id(call_id: str) -> tuple[str, str | None]:
    """→ (the id without its signature, the signature or None)."""
    base, sep, signature = call_id.partition(THOUGHT_SEP)
    return base, (signature or None) if sep else None


def gemini_call_id(call_id: str) -> str | None:
    """Gemini's own id of the call a tool-call id names, when it had one."""
    _, sep, gid = split_tool_call_id(call_id)[0].partition(GEMINI_ID_SEP)
    return gid or None if sep else None


# -- content -----------------------------------------------------------------------------------

def parse_data_url(url: str, where: str) -> tuple[str, str]:
    """`data:<mime>[;base64],<data>` → (mime, base64 data)."""
    header, sep, data = url[5:].partition(",")
    if not sep:
        raise TranslationError(f"{where} is not a valid data URL", where)
    params = header.split(";")
    mime = params[0].strip() or "text/plain"
    if any(p.strip().lower() == "base64" for p in params[1:]):
        data = "".join(data.split())
    else:
        data = base64.b64encode(unquote_to_bytes(data)).decode("ascii")
    if not data:
        raise TranslationError(f"{where} holds no data", where)
    return mime, data


def remote_image_urls(request: Mapping[str, Any]) -> list[str]:
    """The distinct http(s) image URLs a request refers to, in order (they must be fetched before translation).

    De-duplicated through a dict (an ordered set): a request may name tens of thousands of URLs, and comparing
    each with every earlier one stalled the server for seconds."""
    urls: dict[str, None] = {}
    for m in request.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = _image_url(part)
                if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
                    urls[url] = None
    return list(urls)


def _image_url(part: Mapping[str, Any]) -> Any:
    image = part.get("image_url")
    return image.get("url") if isinstance(image, dict) else image


def _text_of(content: Any, where: str) -> str:
    """Text of a string or a list of text parts (system, developer and tool messages)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text", "refusal"):
                value = part.get("text", part.get("refusal", ""))
                if not isinstance(value, str):
                    raise TranslationError(f"{where}[{j}].text must be a string", f"{where}[{j}].text")
                texts.append(value)
            else:
                raise TranslationError(f"{where}[{j}] must be a text part here", f"{where}[{j}]")
        return "\n".join(t for t in texts if t)
    raise TranslationError(f"{where} must be a string or a list of content parts", where)


def _parts(content: Any, where: str, images: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of content parts", where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if isinstance(part, str):
            if part:
                parts.append({"text": part})
            continue
        if not isinstance(part, dict):
            raise TranslationError(f"{at} must be an object", at)
        kind = part.get("type")
        if kind in ("text", "input_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise TranslationError(f"{at}.text must be a string", f"{at}.text")
            if text:
                parts.append({"text": text})
        elif kind == "refusal":
            if isinstance(part.get("refusal"), str) and part["refusal"]:
                parts.append({"text": part["refusal"]})
        elif kind == "image_url":
            url = _image_url(part)
            if not isinstance(url, str) or not url:
                raise TranslationError(f"{at}.image_url.url must be a string", f"{at}.image_url.url")
            if url[:5].lower() == "data:":
                mime, data = parse_data_url(url, f"{at}.image_url.url")
            elif url in images:
                mime, data = images[url]
            else:
                raise TranslationError(f"{at}.image_url.url must be a data: URL or an http(s) URL",
                                       f"{at}.image_url.url")
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise TranslationError(f"{at}.input_audio.data must be base64 text", f"{at}.input_audio")
            fmt = str(audio.get("format") or "wav").lower()
            parts.append({"inlineData": {"mimeType": "audio/mpeg" if fmt == "mp3" else f"audio/{fmt}",
                                         "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file")
            data_url = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(data_url, str) or not data_url.startswith("data:"):
                raise TranslationError(f"{at}.file needs file_data as a data: URL (file ids are not supported)",
                                       f"{at}.file")
            mime, data = parse_data_url(data_url, f"{at}.file.file_data")
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        else:
            raise TranslationError(f"{at}.type {kind!r} is not supported", f"{at}.type")
    return parts


_MARKDOWN_IMAGE = re.compile(r"!\[[^\]\n]{0,200}\]\((data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]+)\)")


def _assistant_parts(m: Mapping[str, Any], where: str, images: Mapping[str, tuple[str, str]],
                     image_signatures: Callable[[str], str | None] | None) -> list[dict[str, Any]]:
    """An assistant turn's content. Images Keyloom returned (in `images`, OpenRouter's shape, or as Markdown
    images in the text, for clients that only keep text) go back as the image parts they were, with their
    thought signatures where known: as text they would be megabytes of base64 billed as prompt tokens."""
    content = m.get("content")
    parts = _parts(content, f"{where}.content", images) if not isinstance(content, str) else \
        _text_with_images(content)
    returned = m.get("images")
    if isinstance(returned, list):
        seen = {p["inlineData"]["data"] for p in parts if "inlineData" in p}
        for j, item in enumerate(returned):
            url = _image_url(item) if isinstance(item, dict) else None
            if not isinstance(url, str) or url[:5].lower() != "data:":
                raise TranslationError(f"{where}.images[{j}] must be an image_url with a data: URL",
                                       f"{where}.images[{j}]")
            mime, data = parse_data_url(url, f"{where}.images[{j}].image_url.url")
            if data not in seen:  # the same image in the Markdown and in `images` goes back once
                parts.append({"inlineData": {"mimeType": mime, "data": data}})
                seen.add(data)
    if image_signatures is not None:
        for p in parts:
            if "inlineData" in p:
                signature = image_signatures(p["inlineData"]["data"])
                if signature:
                    p["thoughtSignature"] = signature
    return parts


def _text_with_images(text: str) -> list[dict[str, Any]]:
    """Text with Markdown data-URL images → text and image parts, in order."""
    if "](data:image/" not in text:
        return [{"text": text}] if text else []
    parts: list[dict[str, Any]] = []
    at = 0
    for match in _MARKDOWN_IMAGE.finditer(text):
        before = text[at:match.start()].strip("\n")
        if before:
            parts.append({"text": before})
        mime, data = parse_data_url(match.group(1), "content")
        parts.append({"inlineData": {"mimeType": mime, "data": data}})
        at = match.end()
    rest = text[at:].strip("\n") if parts else text
    if rest:
        parts.append({"text": rest})
    return parts


def _prefix_name(parts: list[dict[str, Any]], name: Any) -> None:
    if not isinstance(name, str) or not name:
        return
    for p in parts:
        if "text" in p:
            p["text"] = f"{name}: {p['text']}"
            return


def _function_args(arguments: Any, where: str) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise TranslationError(f"{where} must be a JSON string", where)
    try:
        value = ujson.loads(arguments)
    except ValueError:
        raise TranslationError(f"{where} is not valid JSON", where) from None
    return value if isinstance(value, dict) else {"value": value}


def _tool_result(content: Any, where: str) -> dict[str, Any]:
    text = _text_of(content, where)
    try:
        value = ujson.loads(text) if text[:1] in ("{", "[") else text
    except ValueError:
        value = text
    return {"content": value}


def convert_messages(messages: Any, traits: ModelTraits,
                     images: Mapping[str, tuple[str, str]] | None = None,
                     image_signatures: Callable[[str], str | None] | None = None,
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """→ (system instruction parts, contents). `image_signatures`: the thought signature Gemini gave with an
    image it drew (by its base64 data), for images a client sends back in the history."""
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty list", "messages")
    images = images or {}
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}

    def append(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise TranslationError(f"{where} must be an object", where)
        role = m.get("role")
        if role in ("system", "developer"):
            text = _text_of(m.get("content"), f"{where}.content")
            if text:
                name = m.get("name")
                system.append({"text": f"{name}: {text}" if isinstance(name, str) and name else text})
        elif role == "user":
            parts = _parts(m.get("content"), f"{where}.content", images)
            _prefix_name(parts, m.get("name"))
            append("user", parts)
        elif role == "assistant":
            parts = _assistant_parts(m, where, images, image_signatures)
            calls = m.get("tool_calls")
            if calls is not None and not isinstance(calls, list):
                raise TranslationError(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
            first_call = True
            for j, call in enumerate(calls or ()):
                at = f"{where}.tool_calls[{j}]"
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                    raise TranslationError(f"{at}.function.name must be a string", f"{at}.function.name")
                part: dict[str, Any] = {"functionCall": {"name": fn["name"],
                                                         "args": _function_args(fn.get("arguments"),
                                                                                f"{at}.function.arguments")}}
                call_id = call.get("id")
                signature = None
                if isinstance(call_id, str) and call_id:
                    call_names[call_id] = fn["name"]
                    signature = split_tool_call_id(call_id)[1]
                    gid = gemini_call_id(call_id)
                    if gid:
                        part["functionCall"]["id"] = gid
                if signature:
                    part["thoughtSignature"] = signature
                elif traits.thought_signatures and first_call:
                    part["thoughtSignature"] = DUMMY_SIGNATURE
                first_call = False
                parts.append(part)
            fc = m.get("function_call")  # deprecated single-call form
            if isinstance(fc, dict) and isinstance(fc.get("name"), str):
                parts.append({"functionCall": {"name": fc["name"],
                                               "args": _function_args(fc.get("arguments"), f"{where}.function_call")}})
            append("model", parts)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                name = m.get("name") if isinstance(m.get("name"), str) and m.get("name") else None
            if name is None:
                raise TranslationError(f"{where}.tool_call_id does not match any earlier assistant tool call",
                                       f"{where}.tool_call_id")
            response: dict[str, Any] = {"name": name, "response": _tool_result(m.get("content"), f"{where}.content")}
            gid = gemini_call_id(call_id) if isinstance(call_id, str) else None
            if gid:
                response["id"] = gid
            append("user", [{"functionResponse": response}])
        elif role == "function":
            name = m.get("name")
            if not isinstance(name, str) or not name:
                raise TranslationError(f"{where}.name is required for a function message", f"{where}.name")
            append("user", [{"functionResponse": {"name": name,
                                                  "response": _tool_result(m.get("content"), f"{where}.content")}}])
        else:
            raise TranslationError(f"{where}.role must be one of system, developer, user, assistant, tool",
                                   f"{where}.role")

    return place_system(system, contents, traits, "messages")


# -- parameters --------------------------------------------------------------------------------

def _number(req: Mapping[str, Any], name: str, lo: float | None = None, hi: float | None = None) -> float | None:
    value = req.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TranslationError(f"{name} must be a number", name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise TranslationError(f"{name} must be between {lo:g} and {hi:g}", name)
    return value


def _integer(req: Mapping[str, Any], name: str, lo: int, hi: int | None = None) -> int | None:
    value = req.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TranslationError(f"{name} must be an integer", name)
    if value < lo or (hi is not None and value > hi):
        raise TranslationError(f"{name} must be at least {lo}" + (f" and at most {hi}" if hi else ""), name)
    return value


def _stop(req: Mapping[str, Any]) -> list[str] | None:
    stop = req.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise TranslationError("stop must be a string or a list of strings", "stop")
    stop = [s for s in stop if s][:MAX_STOP_SEQUENCES]
    return stop or None


def _response_format(req: Mapping[str, Any], config: dict[str, Any]) -> None:
    rf = req.get("response_format")
    if rf is None:
        return
    if not isinstance(rf, dict):
        raise TranslationError("response_format must be an object", "response_format")
    kind = rf.get("type")
    schema = None
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            raise TranslationError("response_format.json_schema must be an object", "response_format.json_schema")
        schema = js.get("schema") if isinstance(js.get("schema"), dict) else None
    json_output(kind, schema, "response_format", config, "response_format.json_schema.schema")


def json_output(kind: Any, schema: dict[str, Any] | None, where: str, config: dict[str, Any],
                schema_where: str) -> None:
    """A structured-output request of any dialect (`kind`: text, json_object or json_schema) → Gemini's
    responseMimeType and responseSchema (the schema cleaned for Gemini)."""
    if kind in (None, "text"):
        return
    if kind not in ("json_object", "json_schema"):
        raise TranslationError(f"{where}.type must be text, json_object or json_schema", f"{where}.type")
    config["responseMimeType"] = "application/json"
    if kind == "json_schema" and schema is not None:
        cleaned = _schema(schema, schema_where)
        if cleaned:
            config["responseSchema"] = cleaned


def generation_config(req: Mapping[str, Any], traits: ModelTraits) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if (v := _number(req, "temperature", 0, 2)) is not None:
        config["temperature"] = v
    if (v := _number(req, "top_p", 0, 1)) is not None:
        config["topP"] = v
    if (v := _integer(req, "top_k", 1)) is not None:
        config["topK"] = v
    max_tokens = _integer(req, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(req, "max_tokens", 1)
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    if (stop := _stop(req)) is not None:
        config["stopSequences"] = stop
    if (n := _integer(req, "n", 1, MAX_CANDIDATES)) is not None and n != 1:
        config["candidateCount"] = n
    if (seed := _integer(req, "seed", -(2 ** 63))) is not None:
        config["seed"] = seed
    # 0 is the default meaning "no penalty"; some models refuse the field altogether, so 0 is not sent.
    for name, key in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if (v := _number(req, name, -2, 2)) not in (None, 0):
            config[key] = v
    _response_format(req, config)
    _modalities(req, config)
    if (thinking := thinking_config(req.get("reasoning_effort"), traits)) is not None:
        config["thinkingConfig"] = thinking
    return config


MODALITIES = {"text": "TEXT", "image": "IMAGE", "audio": "AUDIO"}
_ASPECT = re.compile(r"^[1-9][0-9]?:[1-9][0-9]?$")
IMAGE_SIZES = ("1K", "2K", "4K")


def _modalities(req: Mapping[str, Any], config: dict[str, Any]) -> None:
    """OpenAI's `modalities` → responseModalities; the image options image models take (`image_config`, as
    OpenRouter names them: aspect_ratio, image_size) → imageConfig."""
    wanted = req.get("modalities")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(m, str) and m.lower() in MODALITIES for m in wanted):
            raise TranslationError(f"modalities must be a list of {', '.join(MODALITIES)}", "modalities")
        if wanted:
            config["responseModalities"] = list(dict.fromkeys(MODALITIES[m.lower()] for m in wanted))
    options = req.get("image_config")
    if options is None:
        return
    if not isinstance(options, dict):
        raise TranslationError("image_config must be an object", "image_config")
    image: dict[str, Any] = {}
    ratio = options.get("aspect_ratio")
    if ratio is not None:
        if not isinstance(ratio, str) or not _ASPECT.match(ratio):
            raise TranslationError("image_config.aspect_ratio must look like 16:9", "image_config.aspect_ratio")
        image["aspectRatio"] = ratio
    size = options.get("image_size")
    if size is not None:
        if not isinstance(size, str) or size.upper() not in IMAGE_SIZES:
            raise TranslationError(f"image_config.image_size must be one of {', '.join(IMAGE_SIZES)}",
                                   "image_config.image_size")
        image["imageSize"] = size.upper()
    if image:
        config["imageConfig"] = image


# -- tools -------------------------------------------------------------------------------------

def _schema(schema: dict[str, Any], where: str, budget: Budget | None = None) -> dict[str, Any]:
    """A client's JSON Schema for Gemini; one too deep or too large is the client's error, named."""
    try:
        return to_gemini_schema(schema, budget)
    except SchemaError as e:
        raise TranslationError(f"{where} {e}", where) from None


def _declaration(fn: Any, where: str, budget: Budget) -> dict[str, Any]:
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise TranslationError(f"{where}.name must be a string", f"{where}.name")
    decl: dict[str, Any] = {"name": fn["name"]}
    if isinstance(fn.get("description"), str) and fn["description"]:
        decl["description"] = fn["description"]
    params = fn.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise TranslationError(f"{where}.parameters must be a JSON Schema object", f"{where}.parameters")
        cleaned = _schema(params, f"{where}.parameters", budget)
        if not is_empty_object(cleaned):
            decl["parameters"] = cleaned
    return decl


def tools_and_config(req: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    declarations: list[dict[str, Any]] = []
    budget = Budget()  # one for all the tools of the request
    tools = req.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise TranslationError("tools must be a list", "tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type", "function") != "function":
                raise TranslationError(f"tools[{i}].type must be function", f"tools[{i}].type")
            declarations.append(_declaration(tool.get("function"), f"tools[{i}].function", budget))
    functions = req.get("functions")  # deprecated form
    if isinstance(functions, list) and not declarations:
        declarations = [_declaration(f, f"functions[{i}]", budget) for i, f in enumerate(functions)]

    choice = req.get("tool_choice", req.get("function_call"))
    mode: str | None = None
    allowed: list[str] | None = None
    if choice is None:
        pass
    elif isinstance(choice, str):
        mapping = {"auto": "AUTO", "none": "NONE", "required": "ANY", "any": "ANY"}
        if choice not in mapping:
            raise TranslationError("tool_choice must be none, auto, required or a named function", "tool_choice")
        mode = mapping[choice]
    elif isinstance(choice, dict):
        if choice.get("type") == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
            spec = choice["allowed_tools"]
            names = [t.get("function", {}).get("name") for t in spec.get("tools") or () if isinstance(t, dict)]
            names = [n for n in names if isinstance(n, str)]
            if spec.get("mode") == "required":
                mode, allowed = "ANY", names
            else:  # Gemini takes a name list only with ANY: narrow the declarations instead
                mode = "AUTO"
                declarations = [d for d in declarations if d["name"] in names]
        else:
            fn = choice.get("function") if "function" in choice else choice
            name = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(name, str):
                raise TranslationError("tool_choice.function.name must be a string", "tool_choice")
            mode, allowed = "ANY", [name]
    else:
        raise TranslationError("tool_choice must be a string or an object", "tool_choice")

    if not declarations:
        return None, None
    config = None
    if mode is not None:
        fcc: dict[str, Any] = {"mode": mode}
        if allowed:
            fcc["allowedFunctionNames"] = allowed
        config = {"functionCallingConfig": fcc}
    return [{"functionDeclarations": declarations}], config


# -- the whole request -------------------------------------------------------------------------

def build_request(req: Mapping[str, Any], traits: ModelTraits,
                  images: Mapping[str, tuple[str, str]] | None = None,
                  extras: Extras = NO_EXTRAS) -> dict[str, Any]:
    if extras.thinking is not None:
        req = {**req, "reasoning_effort": extras.thinking}
    system, contents = convert_messages(req.get("messages"), traits, images, extras.image_signatures)
    body = request_body(system, contents, *tools_and_config(req))
    return finish_body(body, generation_config(req, traits), traits, extras)
