"""Anthropic Messages request → Gemini `GenerateContentRequest` (and the `:countTokens` body). Pure: dicts in,
dicts out, no I/O.

The wire format is Anthropic's `MessageCreateParams` (anthropic-sdk-python `types/message_create_params.py`);
what Claude Code really sends is in the shared reference (`anthropic-messages.md` §9): `role: "system"`
messages inside `messages`, `thinking: {"type": "adaptive", "display": "omitted"}`, `cache_control` on many
blocks, `context_management`, a billing marker as the first system block. The parts the Chat Completions
translator already knows (images, schema cleaning, tool-call ids, numbers) are imported from
`openai_to_gemini`, and the common end of every request from `gemini_body.finish_body`.

Decisions where Anthropic and Gemini differ:
- `system` (a string or text blocks) and every `role: "system"` message (or `mid_conv_system` block), in
  order, go to `systemInstruction`; Claude Code's `x-anthropic-billing-header: …` system block is billing
  metadata for Anthropic, not an instruction, and is dropped. `cache_control` is ignored everywhere.
- Consecutive same-role turns merge (Gemini wants them alternating, Anthropic merges them too).
- Thought signatures. Keyloom's replies carry them in two places (see `gemini_to_anthropic`): a function
  call's in its `tool_use` id (the Chat Completions scheme, with a `toolu_` prefix), every other one as the
  `signature` of a `thinking` block. Coming back, each goes exactly as found (still sealed: the service
  unseals later) onto the part it came with:
    * a `tool_use` id's signature → that functionCall's `thoughtSignature`; a first call without one gets
      Google's placeholder on models that validate signatures (as on the chat side);
    * a `thinking` block with text → `{"text": …, "thought": true, "thoughtSignature": sig}`, as Google's
      own SDKs send a reply's thought parts back (no signature: the thought part alone);
    * a `thinking` block with no text but a signature carries the signature of an answer part: it goes on
      the text part right before it when there is one (Gemini 3 signs the last part of an answer), else on
      the next part of the same message that is not a thought and has no signature (Gemini 2.5 signs the
      first part after its thoughts; other proxies put a function call's signature on an empty thinking block
      right before the `tool_use`), else it is dropped;
    * `redacted_thinking` is dropped: Keyloom never issues it, and an Anthropic-encrypted thought means
      nothing to Gemini.
- Server-tool blocks in the history (`server_tool_use`, `web_search_tool_result`, …) are skipped: Keyloom
  never issues them (Google Search grounding comes back as text), and the ones a real Anthropic model wrote
  hold Anthropic-encrypted content Gemini cannot read.
- `tool_result` → `functionResponse` named after the matching `tool_use` earlier in the history (refused
  when there is none), `{"content": …}` or `{"error": …}` (`is_error`); images in a result follow the turn's
  function responses as parts of their own.
- Images and documents by URL: images must have been fetched by the caller (`remote_image_urls`, then
  `images`); documents by URL or by file id are refused (the fetcher is for images).
- `tools`: client tools (no `type`, or `custom`) become function declarations, their schemas cleaned like
  the chat side's (`defer_loading` tools are declared all the same); `web_search_*` server tools become
  the googleSearch tool; other server tools (bash, text editor, code execution, memory, web fetch, tool
  search, computer use) have no Gemini counterpart and are dropped rather than refused, since Claude Code
  answers a 400 by retrying ever simpler requests. `disable_parallel_tool_use` has no Gemini switch and is
  ignored.
- `thinking`: `enabled` → `budget_config(budget_tokens)`; `adaptive` (and `between_tools`) → the effort of
  `output_config.effort` when given, else the model's default thinking; `disabled` → thinking off where
  the model allows (`thinking_config("none")`); absent → the model's own default. Thought summaries are
  asked for only when the client asked for thinking and did not say `display: "omitted"` (Anthropic then
  returns signatures without thinking text; Claude Code 2.1.332 always says so).
- `max_tokens` is required by Anthropic but not here (Gemini's default applies when missing: lenient, as a
  400 makes Claude Code retry); when given it must be at least 1. `stop_sequences` beyond Gemini's five
  are cut, as on the chat side. `temperature` is passed through within Gemini's 0–2.
- `output_config.format` (`json_schema`) → `responseMimeType` + a cleaned `responseSchema`.
- Ignored: `metadata`, `service_tier`, `container`, `mcp_servers`, `context_management`, `inference_geo`,
  top-level `cache_control`, `stream`, per-message `output_config`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from .gemini_body import (
    DUMMY_SIGNATURE,
    EFFORTS,
    NO_EXTRAS,
    Extras,
    TranslationError,
    budget_config,
    finish_body,
    place_system,
    request_body,
    thinking_config,
)
from .openai_to_gemini import (
    MAX_STOP_SEQUENCES,
    _assistant_parts,
    _integer,
    _number,
    _schema,
    gemini_call_id,
    json_output,
    split_tool_call_id,
)
from .openai_to_gemini import _tool_result as _result_value
from .schema import Budget, is_empty_object
from .traits import ModelTraits

BILLING_MARKER = "x-anthropic-billing-header:"
# Server-tool blocks a history may hold; skipped (see the module docstring).
SERVER_TOOL_BLOCKS = frozenset({
    "server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "container_upload", "mcp_tool_use", "mcp_tool_result",
})
THINKING_TYPES = ("enabled", "adaptive", "disabled", "between_tools")
TOOL_CHOICES = {"auto": "AUTO", "any": "ANY", "tool": "ANY", "none": "NONE"}


def _kind(block: Any) -> str | None:
    """A block's `type` when it is a string (an odd one must not reach a set lookup: lists do not hash)."""
    kind = block.get("type") if isinstance(block, dict) else None
    return kind if isinstance(kind, str) else None


def _fail(message: str, param: str) -> TranslationError:
    return TranslationError(f"{param}: {message}", param)


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail("must be an object", param)
    return value


def _string(block: Mapping[str, Any], key: str, param: str, default: str | None = None) -> str:
    value = block.get(key, default)
    if not isinstance(value, str):
        raise _fail("must be a string", f"{param}.{key}")
    return value


# -- what a request refers to --------------------------------------------------------------------

def _blocks_of(req: Mapping[str, Any]) -> list[Any]:
    """Every content block of every message, tool results' own blocks included (never raises)."""
    out: list[Any] = []
    messages = req.get("messages") if isinstance(req, Mapping) else None
    for m in messages if isinstance(messages, list) else ():
        content = m.get("content") if isinstance(m, dict) else None
        for block in content if isinstance(content, list) else ():
            out.append(block)
            inner = block.get("content") if isinstance(block, dict) and block.get("type") == "tool_result" else None
            if isinstance(inner, list):
                out.extend(inner)
    return out


def remote_image_urls(req: Mapping[str, Any]) -> list[str]:
    """The distinct http(s) URLs of `image` blocks with a `url` source (in tool results too), in order: the
    caller fetches them and passes them to `build_request` as `images`. Never raises, whatever the shape."""
    urls: dict[str, None] = {}  # an ordered set
    for block in _blocks_of(req):
        source = block.get("source") if isinstance(block, dict) and block.get("type") == "image" else None
        url = source.get("url") if isinstance(source, dict) and source.get("type") == "url" else None
        if isinstance(url, str) and url[:8].lower().startswith(("http://", "https://")):
            urls[url] = None
    return list(urls)


# -- content blocks ------------------------------------------------------------------------------

def _text_blocks(content: Any, param: str) -> list[str]:
    """A string or a list of text blocks (system prompts, system messages) → their texts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise _fail("must be a string or a list of text blocks", param)
    texts = []
    for j, block in enumerate(content):
        at = f"{param}.{j}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _fail("must be a text block", at)
        text = _string(block, "text", at)
        if text:
            texts.append(text)
    return texts


def _image(block: Mapping[str, Any], param: str, images: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    source = _object(block.get("source"), f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        mime = _string(source, "media_type", f"{param}.source")
        data = "".join(_string(source, "data", f"{param}.source").split())
        if not data:
            raise _fail("holds no data", f"{param}.source.data")
        return {"inlineData": {"mimeType": mime, "data": data}}
    if kind == "url":
        url = _string(source, "url", f"{param}.source")
        if url not in images:
            raise _fail("must be an http(s) URL Keyloom can fetch", f"{param}.source.url")
        mime, data = images[url]
        return {"inlineData": {"mimeType": mime, "data": data}}
    raise _fail("type must be base64 or url (file ids are not supported)", f"{param}.source.type")


def _document(block: Mapping[str, Any], param: str, images: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """A document: a base64 file (PDF) → inlineData; plain text, or content blocks → their parts. Its title
    and context, when given, go before it as text so the model knows what it reads."""
    source = _object(block.get("source"), f"{param}.source")
    kind = source.get("type")
    parts: list[dict[str, Any]] = []
    for key in ("title", "context"):
        value = block.get(key)
        if isinstance(value, str) and value:
            parts.append({"text": value})
    if kind == "base64":
        mime = _string(source, "media_type", f"{param}.source", "application/pdf")
        data = "".join(_string(source, "data", f"{param}.source").split())
        if not data:
            raise _fail("holds no data", f"{param}.source.data")
        parts.append({"inlineData": {"mimeType": mime, "data": data}})
    elif kind == "text":
        text = _string(source, "data", f"{param}.source")
        if text:
            parts.append({"text": text})
    elif kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            parts.extend([{"text": inner}] if inner else [])
        elif isinstance(inner, list):
            for k, item in enumerate(inner):
                parts.extend(_plain_block(item, f"{param}.source.content.{k}", images))
        else:
            raise _fail("must be a string or a list of blocks", f"{param}.source.content")
    else:
        raise _fail("type must be base64, text or content (documents by URL or file id are not supported)",
                    f"{param}.source.type")
    return parts


def _search_result(block: Mapping[str, Any], param: str) -> list[dict[str, Any]]:
    lines = [v for v in (block.get("title"), block.get("source")) if isinstance(v, str) and v]
    lines.extend(_text_blocks(block.get("content"), f"{param}.content"))
    return [{"text": "\n".join(lines)}] if lines else []


def _plain_block(block: Any, param: str, images: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """A block either role may hold: text, image, document, search result."""
    if not isinstance(block, dict):
        raise _fail("must be a content block (an object)", param)
    kind = block.get("type")
    if kind == "text":
        text = _string(block, "text", param)
        return [{"text": text}] if text else []
    if kind == "image":
        return [_image(block, param, images)]
    if kind == "document":
        return _document(block, param, images)
    if kind == "search_result":
        return _search_result(block, param)
    raise _fail(f"block type {kind!r} is not supported here", f"{param}.type")


def _tool_result(block: Mapping[str, Any], param: str, names: Mapping[str, str],
                 images: Mapping[str, tuple[str, str]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """→ (the functionResponse part, the parts of the images and documents the result holds)."""
    call_id = _string(block, "tool_use_id", param)
    name = names.get(call_id)
    if name is None:
        raise _fail("does not match any tool_use earlier in the conversation", f"{param}.tool_use_id")
    content = block.get("content")
    texts: list[str] = []
    media: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, item in enumerate(content):
            at = f"{param}.content.{k}"
            if isinstance(item, dict) and item.get("type") == "tool_reference":
                texts.append(f"Tool loaded: {_string(item, 'tool_name', at)}")
                continue
            for part in _plain_block(item, at, images):
                (texts.append(part["text"]) if "text" in part else media.append(part))
    elif content is not None:
        raise _fail("must be a string or a list of blocks", f"{param}.content")
    value = _result_value("\n".join(texts), f"{param}.content")["content"]
    response: dict[str, Any] = {"name": name,
                                "response": {"error" if block.get("is_error") is True else "content": value}}
    gid = gemini_call_id(call_id)
    if gid:
        response["id"] = gid
    return {"functionResponse": response}, media


def _tool_use(block: Mapping[str, Any], param: str) -> tuple[str, dict[str, Any]]:
    """→ (the tool_use id, its functionCall part, with the signature its id carries)."""
    call_id = _string(block, "id", param)
    name = _string(block, "name", param)
    if not name:
        raise _fail("must not be empty", f"{param}.name")
    args = block.get("input")
    if args is None:
        args = {}
    elif not isinstance(args, dict):
        raise _fail("must be an object", f"{param}.input")
    call: dict[str, Any] = {"name": name, "args": args}
    gid = gemini_call_id(call_id)
    if gid:
        call["id"] = gid
    part: dict[str, Any] = {"functionCall": call}
    signature = split_tool_call_id(call_id)[1]
    if signature:
        part["thoughtSignature"] = signature
    return call_id, part


def _unsigned_answer(part: Mapping[str, Any]) -> bool:
    return not part.get("thought") and "thoughtSignature" not in part


def _place_signatures(parts: list[dict[str, Any]], pending: list[tuple[int, str]]) -> None:
    """Put each answer-part signature (from a thinking block without text, inserted before `parts[at]`) on
    the unsigned text part right before it, else the next unsigned answer part, else nowhere."""
    for at, signature in pending:
        before = parts[at - 1] if at > 0 else None
        if before is not None and "text" in before and _unsigned_answer(before):
            before["thoughtSignature"] = signature
            continue
        for part in parts[at:]:
            if _unsigned_answer(part):
                part["thoughtSignature"] = signature
                break


def _assistant(content: Any, param: str, traits: ModelTraits, names: dict[str, str],
               images: Mapping[str, tuple[str, str]],
               image_signatures: Callable[[str], str | None] | None) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return _assistant_parts({"content": content or ""}, param, images, image_signatures)
    if not isinstance(content, list):
        raise _fail("must be a string or a list of content blocks", param)
    parts: list[dict[str, Any]] = []
    pending: list[tuple[int, str]] = []
    for j, block in enumerate(content):
        at = f"{param}.{j}"
        kind = _kind(block)
        if not isinstance(block, dict):
            raise _fail("must be a content block (an object)", at)
        if kind == "text":
            text = _string(block, "text", at)
            # Markdown data-URL images (what Keyloom made of images Gemini drew) go back as images.
            parts.extend(_assistant_parts({"content": text}, at, images, image_signatures) if text else [])
        elif kind == "thinking":
            thinking = _string(block, "thinking", at, "")
            signature = block.get("signature")
            signature = signature if isinstance(signature, str) and signature else None
            if thinking:
                parts.append({"text": thinking, "thought": True, **({"thoughtSignature": signature}
                                                                      if signature else {})})
            elif signature:
                pending.append((len(parts), signature))
        elif kind == "tool_use":
            call_id, part = _tool_use(block, at)
            names[call_id] = part["functionCall"]["name"]
            parts.append(part)
        elif kind == "redacted_thinking" or kind in SERVER_TOOL_BLOCKS:
            continue
        elif kind == "tool_result":
            raise _fail("tool_result blocks belong in a user message", f"{at}.type")
        else:
            parts.extend(_plain_block(block, at, images))
    _place_signatures(parts, pending)
    if traits.thought_signatures:
        calls = [p for p in parts if "functionCall" in p]
        if calls and "thoughtSignature" not in calls[0]:
            calls[0]["thoughtSignature"] = DUMMY_SIGNATURE
    return parts


def _user(content: Any, param: str, names: Mapping[str, str], images: Mapping[str, tuple[str, str]],
          system: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A user turn: its function responses first (Gemini answers calls with the responses leading the turn;
    Anthropic wants tool results first anyway), then everything else in order."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _fail("must be a string or a list of content blocks", param)
    responses: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{param}.{j}"
        kind = _kind(block)
        if kind == "tool_result":
            response, media = _tool_result(block, at, names, images)
            responses.append(response)
            others.extend(media)
        elif kind == "mid_conv_system":
            system.extend({"text": t} for t in _text_blocks(block.get("content"), f"{at}.content"))
        elif kind in SERVER_TOOL_BLOCKS or kind == "redacted_thinking":
            continue
        elif kind in ("tool_use", "thinking"):
            raise _fail(f"{kind} blocks belong in an assistant message", f"{at}.type")
        else:
            others.extend(_plain_block(block, at, images))
    return responses + others


def convert_messages(req: Mapping[str, Any], traits: ModelTraits,
                     images: Mapping[str, tuple[str, str]] | None = None,
                     image_signatures: Callable[[str], str | None] | None = None,
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`system` and `messages` → (system instruction parts, contents)."""
    images = images or {}
    system = [{"text": t} for t in _text_blocks(req.get("system"), "system") if not t.startswith(BILLING_MARKER)]
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("must be a non-empty list", "messages")
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_use id → function name, from the history so far
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(m, dict):
            raise _fail("must be an object", where)
        role = m.get("role")
        content = m.get("content")
        if role == "system":
            system.extend({"text": t} for t in _text_blocks(content, f"{where}.content"))
            continue
        if role == "user":
            gemini_role, parts = "user", _user(content, f"{where}.content", names, images, system)
        elif role == "assistant":
            gemini_role = "model"
            parts = _assistant(content, f"{where}.content", traits, names, images, image_signatures)
        else:
            raise _fail("must be user, assistant or system", f"{where}.role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return place_system(system, contents, traits, "messages")


# -- tools ---------------------------------------------------------------------------------------

def tools_and_config(req: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    tools = req.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise _fail("must be a list", "tools")
    declarations: list[dict[str, Any]] = []
    search = False
    budget = Budget()  # one for all the tools of the request
    for i, tool in enumerate(tools):
        at = f"tools.{i}"
        tool = _object(tool, at)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            if not isinstance(kind, str):
                raise _fail("must be a string", f"{at}.type")
            search = search or kind.startswith("web_search")
            continue
        name = _string(tool, "name", at)
        if not name:
            raise _fail("must not be empty", f"{at}.name")
        decl: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str) and tool["description"]:
            decl["description"] = tool["description"]
        schema = tool.get("input_schema")
        if schema is not None:
            cleaned = _schema(_object(schema, f"{at}.input_schema"), f"{at}.input_schema", budget)
            if not is_empty_object(cleaned):
                decl["parameters"] = cleaned
        declarations.append(decl)

    config = None
    choice = req.get("tool_choice")
    if choice is not None:
        choice = _object(choice, "tool_choice")
        mode = TOOL_CHOICES.get(_kind(choice) or "")
        if mode is None:
            raise _fail("type must be auto, any, tool or none", "tool_choice.type")
        fcc: dict[str, Any] = {"mode": mode}
        if choice["type"] == "tool":
            fcc["allowedFunctionNames"] = [_string(choice, "name", "tool_choice")]
        config = {"functionCallingConfig": fcc}
    out: list[dict[str, Any]] = []
    if declarations:
        out.append({"functionDeclarations": declarations})
    if search:
        out.append({"googleSearch": {}})
    return out or None, config if declarations else None


# -- generation config ---------------------------------------------------------------------------

def _stop_sequences(req: Mapping[str, Any]) -> list[str] | None:
    stop = req.get("stop_sequences")
    if stop is None:
        return None
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _fail("must be a list of strings", "stop_sequences")
    return [s for s in stop if s][:MAX_STOP_SEQUENCES] or None


def _thinking(req: Mapping[str, Any], traits: ModelTraits, extras: Extras) -> tuple[dict[str, Any] | None, bool]:
    """→ (thinkingConfig or None, whether thought summaries are wanted)."""
    output = req.get("output_config")
    effort = None
    if output is not None:
        effort = _object(output, "output_config").get("effort")
        if effort is not None and (not isinstance(effort, str) or effort.lower() not in EFFORTS):
            raise _fail(f"must be one of {', '.join(EFFORTS)}", "output_config.effort")
    thinking = req.get("thinking")
    kind = None
    display = None
    if thinking is not None:
        thinking = _object(thinking, "thinking")
        kind = thinking.get("type")
        if kind not in THINKING_TYPES:
            raise _fail(f"type must be one of {', '.join(THINKING_TYPES)}", "thinking.type")
        display = thinking.get("display")
        if display not in (None, "summarized", "omitted"):
            raise _fail("must be summarized or omitted", "thinking.display")
    shown = kind in ("enabled", "adaptive", "between_tools") and display != "omitted"
    if extras.thinking is not None:
        return thinking_config(extras.thinking, traits, "thinking"), shown
    if kind == "disabled":
        return thinking_config("none", traits, "thinking"), False
    if kind == "enabled":
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise _fail("must be a non-negative integer", "thinking.budget_tokens")
        return budget_config(budget, traits), shown
    return thinking_config(effort, traits, "output_config.effort"), shown


def _output_format(req: Mapping[str, Any], config: dict[str, Any]) -> None:
    output = req.get("output_config")
    fmt = output.get("format") if isinstance(output, dict) else None
    if fmt is None:
        return
    fmt = _object(fmt, "output_config.format")
    if fmt.get("type") != "json_schema":
        raise _fail("type must be json_schema", "output_config.format.type")
    schema = _object(fmt.get("schema"), "output_config.format.schema")
    json_output("json_schema", schema, "output_config.format", config, "output_config.format.schema")


def generation_config(req: Mapping[str, Any], traits: ModelTraits, extras: Extras) -> tuple[dict[str, Any], bool]:
    """→ (generationConfig, whether thought summaries are wanted)."""
    config: dict[str, Any] = {}
    if (v := _number(req, "temperature", 0, 2)) is not None:
        config["temperature"] = v
    if (v := _number(req, "top_p", 0, 1)) is not None:
        config["topP"] = v
    if (k := _integer(req, "top_k", 1)) is not None:
        config["topK"] = k
    if (k := _integer(req, "max_tokens", 1)) is not None:
        config["maxOutputTokens"] = k
    if (stop := _stop_sequences(req)) is not None:
        config["stopSequences"] = stop
    _output_format(req, config)
    thinking, shown = _thinking(req, traits, extras)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config, shown


# -- the whole request ---------------------------------------------------------------------------

def _contents_body(req: Mapping[str, Any], traits: ModelTraits, images: Mapping[str, tuple[str, str]] | None,
                   image_signatures: Callable[[str], str | None] | None) -> dict[str, Any]:
    if not isinstance(req, Mapping):
        raise TranslationError("the request body must be a JSON object")
    system, contents = convert_messages(req, traits, images, image_signatures)
    body = request_body(system, contents, *tools_and_config(req))
    return body


def build_request(req: Mapping[str, Any], traits: ModelTraits, images: Mapping[str, tuple[str, str]] | None = None,
                  extras: Extras = NO_EXTRAS) -> dict[str, Any]:
    """A Messages API request → a Gemini GenerateContentRequest. `images`: the fetched `url` images, by URL."""
    body = _contents_body(req, traits, images, extras.image_signatures)
    config, shown = generation_config(req, traits, extras)
    if not shown and extras.show_thinking:
        extras = replace(extras, show_thinking=False)
    return finish_body(body, config, traits, extras)


def count_tokens_request(req: Mapping[str, Any], traits: ModelTraits,
                         images: Mapping[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """A `count_tokens` request → the body of Gemini's `models/{m}:countTokens`: the `generateContentRequest`
    form, which (unlike bare `contents`) counts the system instruction and the tools too; it needs the model
    as `models/<id>` (taken from `req["model"]`). Sampling and thinking settings change no input count and
    are left out."""
    body = _contents_body(req, traits, images, None)
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("must be a model id", "model")
    body["model"] = model if model.startswith("models/") else f"models/{model}"
    return {"generateContentRequest": body}
