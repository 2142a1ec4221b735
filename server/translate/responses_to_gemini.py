"""OpenAI Responses request (`POST /v1/responses`) → Gemini `GenerateContentRequest`. Pure: dicts in, dicts out.

The Responses dialect says the same things as Chat Completions in other words, so the pieces are the Chat
translator's (openai_to_gemini): data URLs, tool declarations and their schema cleaner, call ids carrying
Gemini's id and the thought signature, sampling numbers, thinking effort; only the walk over `input` items is
this module's own. Rules beyond Chat's (reference: the spec's `CreateResponse`, and what Codex CLI sends):

- `instructions`, then every `system`/`developer` message wherever it stands, → `systemInstruction`, in order
  (Codex sends its whole prompt as developer messages and no `instructions`);
- consecutive model items (reasoning, assistant message, function_call) form ONE `model` content, consecutive
  function_call_outputs ONE `user` content, as Gemini wants a turn's calls answered together in the next turn;
- thought signatures come back in two places: a `function_call`'s `call_id` (the Chat scheme,
  `call_…__thought__<signature>`) goes onto its `functionCall` part; a reasoning item's `encrypted_content`
  (where the other signatures, e.g. Gemini 3's on text parts, went out) goes onto the next part of the same
  model turn that has no signature, or, when the turn has none after it (Gemini signs the last part of an
  answer, so the reasoning item that carries it comes after the message), onto the last earlier one. Both stay
  sealed here: the service unseals them (server/signatures.py);
- a function_call_output's function name (which Gemini needs) is found from the matching function_call in the
  history: without one the request is refused, as a guess would be a wrong answer;
- items of hosted tools Gemini cannot replay (web_search_call, file_search_call, computer_call, shell and patch
  calls, MCP, custom tools, tool search, compaction, …) are history of work already done: they are skipped.
  `item_reference` is refused (it names an item stored elsewhere, which Keyloom does not have: dropping it
  would silently change the conversation), and so is any item type the spec does not have;
- tools: function tools (flat, or grouped in a `namespace`, also from `additional_tools` items) →
  functionDeclarations; `web_search*` → googleSearch and `code_interpreter` → codeExecution, but only when the
  request declares no function: Gemini 2.x refuses built-in tools combined with function declarations, and an
  agent (Codex sends `web_search` beside its functions on every turn) needs its functions more. Other hosted
  tools (file_search, computer, mcp, image_generation, shell, custom, …) have no Gemini counterpart and are
  dropped: a tool is an offer, and the model answers without it;
- `parallel_tool_calls: false`: Gemini has no such switch; nothing is sent;
- `reasoning.effort` → thinkingConfig (as Chat's reasoning_effort); thought summaries (includeThoughts) only when
  `reasoning.summary` asks for them; `text.format` → responseMimeType/responseSchema (as Chat's
  response_format); fields Gemini has no use for (metadata, user, store, include, truncation, prompt_cache_key,
  service_tier, safety_identifier, client_metadata, text.verbosity, unknown ones) are accepted and ignored.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .gemini_body import (
    DUMMY_SIGNATURE,
    NO_EXTRAS,
    Extras,
    TranslationError,
    finish_body,
    place_system,
    request_body,
    thinking_config,
)
from .openai_to_gemini import (
    _declaration,
    _function_args,
    _integer,
    _number,
    _text_of,
    _text_with_images,
    _tool_result,
    gemini_call_id,
    json_output,
    parse_data_url,
    split_tool_call_id,
)
from .schema import Budget
from .traits import ModelTraits

# Items a client replays from hosted tools Gemini has no counterpart for: work already done, skipped.
SKIPPED_ITEMS = frozenset({
    "web_search_call", "file_search_call", "computer_call", "computer_call_output", "code_interpreter_call",
    "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call",
    "custom_tool_call", "custom_tool_call_output", "tool_search_call", "tool_search_output", "compaction",
    "compaction_trigger", "program", "program_output", "additional_tools",  # additional_tools: read as tools
})
SEARCH_TOOLS = frozenset({"web_search", "web_search_2025_08_26", "web_search_preview",
                          "web_search_preview_2025_03_11"})
SUMMARIES = ("auto", "concise", "detailed")
ROLES = ("user", "assistant", "system", "developer")

# Base64 beginnings of the image formats Gemini draws (an image_generation_call's `result` has no MIME type).
_IMAGE_MAGIC = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("UklGR", "image/webp"), ("R0lGOD", "image/gif"))

Images = Mapping[str, tuple[str, str]]


# -- content parts -----------------------------------------------------------------------------

def remote_image_urls(req: Mapping[str, Any]) -> list[str]:
    """The distinct http(s) image URLs of `input_image` parts (in messages and function outputs), in order:
    they must be fetched before translation (the caller passes them back in `images`)."""
    urls: dict[str, None] = {}
    items = req.get("input") if isinstance(req, Mapping) else None
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        content = item.get("output") if item.get("type") == "function_call_output" else item.get("content")
        for part in content if isinstance(content, list) else ():
            url = part.get("image_url") if isinstance(part, dict) and part.get("type") == "input_image" else None
            if isinstance(url, str) and url[:8].lower().startswith(("http://", "https://")):
                urls[url] = None
    return list(urls)


def _media(part: Mapping[str, Any], at: str, images: Images) -> dict[str, Any]:
    """An `input_image` or `input_file` part → inlineData. File ids name files stored at OpenAI: refused."""
    kind = part["type"]
    if part.get("file_id") is not None:
        raise TranslationError(f"{at}.file_id is not supported (Keyloom stores no files): send the "
                               f"{'image as a data: or http(s) URL' if kind == 'input_image' else 'file as file_data'}",
                               f"{at}.file_id")
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise TranslationError(f"{at}.image_url must be a data: URL or an http(s) URL", f"{at}.image_url")
        if url[:5].lower() == "data:":
            mime, data = parse_data_url(url, f"{at}.image_url")
        elif url in images:
            mime, data = images[url]
        else:
            raise TranslationError(f"{at}.image_url must be a data: URL or an http(s) URL", f"{at}.image_url")
        return {"inlineData": {"mimeType": mime, "data": data}}
    data_url = part.get("file_data")
    if not isinstance(data_url, str) or data_url[:5].lower() != "data:":
        raise TranslationError(f"{at}.file_data must be a data: URL (file ids and file URLs are not supported)",
                               f"{at}.file_data")
    mime, data = parse_data_url(data_url, f"{at}.file_data")
    return {"inlineData": {"mimeType": mime, "data": data}}


def _content(content: Any, where: str, images: Images, model: bool) -> list[dict[str, Any]]:
    """A message's content (a string or parts) → Gemini parts. In the model's own messages, Markdown data-URL
    images (how some clients keep images) go back as the images they were, as in the Chat translator."""
    if isinstance(content, str):
        return _text_with_images(content) if model else [{"text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or a list of content parts", where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise TranslationError(f"{at} must be an object", at)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "refusal"):
            field = "refusal" if kind == "refusal" else "text"
            text = part.get(field)
            if not isinstance(text, str):
                raise TranslationError(f"{at}.{field} must be a string", f"{at}.{field}")
            parts.extend(_text_with_images(text) if model else [{"text": text}] if text else [])
        elif kind in ("input_image", "input_file"):
            parts.append(_media(part, at, images))
        else:
            raise TranslationError(f"{at}.type {kind!r} is not supported here", f"{at}.type")
    return parts


def _output_parts(output: Any, where: str, images: Images) -> tuple[str, list[dict[str, Any]]]:
    """A function_call_output's `output` → (its text, for functionResponse.response; its images and files, which
    go beside the responses in the same user turn)."""
    if isinstance(output, str) or output is None:
        return output or "", []
    if not isinstance(output, list):
        raise TranslationError(f"{where} must be a string or a list of content parts", where)
    texts: list[str] = []
    media: list[dict[str, Any]] = []
    for j, part in enumerate(output):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_image", "input_file"):
            media.append(_media(part, at, images))
        elif kind in ("input_text", "output_text", "text"):
            if not isinstance(part.get("text"), str):
                raise TranslationError(f"{at}.text must be a string", f"{at}.text")
            texts.append(part["text"])
        else:
            raise TranslationError(f"{at} must be an input_text, input_image or input_file part", at)
    return "\n".join(t for t in texts if t), media


def _image_call(item: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """An image the model drew (our image_generation_call item) → the inlineData it was."""
    result = item.get("result")
    if result is None:
        return []
    if not isinstance(result, str):
        raise TranslationError(f"{where}.result must be base64 text", f"{where}.result")
    mime = next((m for magic, m in _IMAGE_MAGIC if result.startswith(magic)), "image/png")
    return [{"inlineData": {"mimeType": mime, "data": result}}] if result else []


# -- turns -------------------------------------------------------------------------------------

class _Turns:
    """Gemini `contents` being assembled: same-role items merge into one turn; the reasoning signatures of a
    model turn wait for the part they belong to (see the module docstring)."""

    def __init__(self, traits: ModelTraits, image_signatures: Callable[[str], str | None] | None):
        self.traits = traits
        self.image_signatures = image_signatures
        self.contents: list[dict[str, Any]] = []
        self.pending: list[str] = []   # encrypted_content of reasoning items, for the next unsigned model part
        self.called = False            # the current model turn has a function call already

    def _turn(self, role: str) -> list[dict[str, Any]]:
        if self.contents and self.contents[-1]["role"] != role:
            self.close_model_turn()  # may drop an empty model turn: the turn before it can be this role's
        if not self.contents or self.contents[-1]["role"] != role:
            self.contents.append({"role": role, "parts": []})
        parts: list[dict[str, Any]] = self.contents[-1]["parts"]
        return parts

    def model(self, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        turn = self._turn("model")
        for p in parts:
            if "inlineData" in p and "thoughtSignature" not in p and self.image_signatures is not None:
                signature = self.image_signatures(p["inlineData"]["data"])
                if signature:
                    p["thoughtSignature"] = signature
            if self.pending and "thoughtSignature" not in p:
                p["thoughtSignature"] = self.pending.pop(0)
            if "functionCall" in p:
                if "thoughtSignature" not in p and self.traits.thought_signatures and not self.called:
                    p["thoughtSignature"] = DUMMY_SIGNATURE  # Gemini 3 wants one on a turn's first call
                self.called = True
            turn.append(p)

    def reasoning(self, signature: str) -> None:
        self._turn("model")
        self.pending.append(signature)

    def user(self, parts: list[dict[str, Any]]) -> None:
        if parts:
            self._turn("user").extend(parts)

    def function_response(self, part: dict[str, Any], media: list[dict[str, Any]]) -> None:
        """After the earlier responses of this turn, before any image an output brought along."""
        turn = self._turn("user")
        at = 0
        while at < len(turn) and "functionResponse" in turn[at]:
            at += 1
        turn.insert(at, part)
        turn.extend(media)

    def close_model_turn(self) -> None:
        """The model turn ends: signatures no later part took go onto its last unsigned part (else are lost);
        a turn with no part at all is dropped (reasoning items alone say nothing Gemini can use)."""
        if not self.contents or self.contents[-1]["role"] != "model":
            return
        parts = self.contents[-1]["parts"]
        for p in reversed(parts):
            if not self.pending:
                break
            if "thoughtSignature" not in p:
                p["thoughtSignature"] = self.pending.pop()
        if not parts:
            self.contents.pop()
        self.pending = []
        self.called = False


def convert_input(req: Mapping[str, Any], traits: ModelTraits, images: Images | None = None,
                  image_signatures: Callable[[str], str | None] | None = None,
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`instructions` + `input` → (system instruction parts, contents)."""
    images = images or {}
    system: list[dict[str, Any]] = []
    instructions = req.get("instructions")
    if instructions is not None:
        text = _text_of(instructions, "instructions")
        if text:
            system.append({"text": text})
    items: Any = req.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    elif not isinstance(items, list):
        raise TranslationError("input must be a string or a list of items", "input")
    turns = _Turns(traits, image_signatures)
    call_names: dict[str, str] = {}
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{where} must be an object", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind is not None and not isinstance(kind, str):
            raise TranslationError(f"{where}.type must be a string", f"{where}.type")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise TranslationError(f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
            if role in ("system", "developer"):
                text = _text_of(item.get("content"), f"{where}.content")
                if text:
                    system.append({"text": text})
            elif role == "user":
                turns.user(_content(item.get("content"), f"{where}.content", images, model=False))
            else:
                turns.model(_content(item.get("content"), f"{where}.content", images, model=True))
        elif kind == "function_call":
            name, call_id = item.get("name"), item.get("call_id")
            if not isinstance(name, str) or not name:
                raise TranslationError(f"{where}.name must be a non-empty string", f"{where}.name")
            if not isinstance(call_id, str) or not call_id:
                raise TranslationError(f"{where}.call_id must be a non-empty string", f"{where}.call_id")
            call: dict[str, Any] = {"name": name, "args": _function_args(item.get("arguments"), f"{where}.arguments")}
            if gid := gemini_call_id(call_id):
                call["id"] = gid
            part: dict[str, Any] = {"functionCall": call}
            if signature := split_tool_call_id(call_id)[1]:
                part["thoughtSignature"] = signature
            call_names[call_id] = name
            turns.model([part])
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise TranslationError(f"{where}.call_id does not match any earlier function_call in input",
                                       f"{where}.call_id")
            text, media = _output_parts(item.get("output"), f"{where}.output", images)
            response: dict[str, Any] = {"name": name, "response": _tool_result(text, f"{where}.output")}
            if gid := gemini_call_id(str(call_id)):
                response["id"] = gid
            turns.function_response({"functionResponse": response}, media)
        elif kind == "reasoning":
            blob = item.get("encrypted_content")
            if blob is not None and not isinstance(blob, str):
                raise TranslationError(f"{where}.encrypted_content must be a string", f"{where}.encrypted_content")
            if blob:
                turns.reasoning(blob)
        elif kind == "image_generation_call":
            turns.model(_image_call(item, where))
        elif kind == "item_reference":
            raise TranslationError(f"{where}: item_reference is not supported (Keyloom stores no items); "
                                   "send the item itself", where)
        elif kind in SKIPPED_ITEMS:
            continue
        else:
            raise TranslationError(f"{where}.type {kind!r} is not supported", f"{where}.type")
    turns.close_model_turn()
    contents = turns.contents

    return place_system(system, contents, traits, "input")


# -- tools -------------------------------------------------------------------------------------

def _tool_list(req: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(param path, tool) of the request's tools and of its `additional_tools` input items, in order."""
    tools = req.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise TranslationError("tools must be a list", "tools")
    found = [(f"tools[{i}]", t) for i, t in enumerate(tools or ())]
    items = req.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            more = item.get("tools")
            if not isinstance(more, list):
                raise TranslationError(f"input[{i}].tools must be a list", f"input[{i}].tools")
            found.extend((f"input[{i}].tools[{j}]", t) for j, t in enumerate(more))
    return found


def function_namespaces(req: Mapping[str, Any]) -> dict[str, str]:
    """Function name → the `namespace` tool it was declared in (a call to it names the namespace again)."""
    out: dict[str, str] = {}
    try:
        tools = _tool_list(req)
    except TranslationError:
        return out
    for _, tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            for sub in tool.get("tools") or () if isinstance(tool.get("tools"), list) else ():
                if isinstance(sub, dict) and isinstance(sub.get("name"), str):
                    out.setdefault(sub["name"], tool["name"])
    return out


def _tool_choice(choice: Any) -> tuple[str | None, list[str] | None]:
    """→ (functionCallingConfig mode, allowed function names)."""
    if choice is None:
        return None, None
    if isinstance(choice, str):
        modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
        if choice not in modes:
            raise TranslationError("tool_choice must be none, auto, required or an object", "tool_choice")
        return modes[choice], None
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice must be a string or an object", "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise TranslationError("tool_choice.name must be a string", "tool_choice.name")
        return "ANY", [choice["name"]]
    if kind == "allowed_tools":
        tools = choice.get("tools")
        if not isinstance(tools, list):
            raise TranslationError("tool_choice.tools must be a list", "tool_choice.tools")
        names = [t["name"] for t in tools if isinstance(t, dict) and t.get("type") == "function"
                 and isinstance(t.get("name"), str)]
        return ("ANY" if choice.get("mode") == "required" else "AUTO"), names
    if isinstance(kind, str):
        return None, None  # a hosted or custom tool: not one Gemini is given, so the model's own choice
    raise TranslationError("tool_choice.type must be a string", "tool_choice.type")


def tools_and_config(req: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """→ (Gemini tools, toolConfig)."""
    declarations: list[dict[str, Any]] = []
    names: set[str] = set()
    search = code = False
    budget = Budget()

    def declare(tool: Any, where: str) -> None:
        decl = _declaration(tool, where, budget)
        if decl["name"] not in names:  # a name offered twice (tools and additional_tools): the first counts
            names.add(decl["name"])
            declarations.append(decl)

    for where, tool in _tool_list(req):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise TranslationError(f"{where}.type must be a string", f"{where}.type")
        kind = tool["type"]
        if kind == "function":
            declare(tool, where)
        elif kind == "namespace":
            subs = tool.get("tools")
            if not isinstance(subs, list):
                raise TranslationError(f"{where}.tools must be a list", f"{where}.tools")
            for j, sub in enumerate(subs):
                if isinstance(sub, dict) and sub.get("type", "function") == "function":
                    declare(sub, f"{where}.tools[{j}]")
        elif kind in SEARCH_TOOLS:
            search = True
        elif kind == "code_interpreter":
            code = True
        # anything else: a hosted tool without a Gemini counterpart, dropped

    mode, allowed = _tool_choice(req.get("tool_choice"))
    if mode == "AUTO" and allowed is not None:  # Gemini takes a name list only with ANY: narrow the offer
        declarations = [d for d in declarations if d["name"] in allowed]
        allowed = None
    if declarations:
        config = None
        if mode is not None:
            fcc: dict[str, Any] = {"mode": mode}
            if allowed:
                fcc["allowedFunctionNames"] = allowed
            config = {"functionCallingConfig": fcc}
        return [{"functionDeclarations": declarations}], config
    builtin: list[dict[str, Any]] = [{"googleSearch": {}}] if search else []
    if code:
        builtin.append({"codeExecution": {}})
    return (builtin or None), None


# -- parameters --------------------------------------------------------------------------------

def _text_format(req: Mapping[str, Any], config: dict[str, Any]) -> None:
    text = req.get("text")
    if text is None:
        return
    if not isinstance(text, dict):
        raise TranslationError("text must be an object", "text")
    fmt = text.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise TranslationError("text.format must be an object", "text.format")
    kind = fmt.get("type")
    schema = fmt.get("schema")
    if kind == "json_schema" and not isinstance(schema, dict):
        raise TranslationError("text.format.schema must be a JSON Schema object", "text.format.schema")
    json_output(kind, schema if kind == "json_schema" else None, "text.format", config, "text.format.schema")


def _thinking(req: Mapping[str, Any], traits: ModelTraits, extras: Extras) -> dict[str, Any] | None:
    reasoning = req.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise TranslationError("reasoning must be an object", "reasoning")
    reasoning = reasoning or {}
    summary = reasoning.get("summary", reasoning.get("generate_summary"))
    if summary is not None and summary not in SUMMARIES:
        raise TranslationError(f"reasoning.summary must be one of {', '.join(SUMMARIES)}", "reasoning.summary")
    effort = extras.thinking if extras.thinking is not None else reasoning.get("effort")
    config = thinking_config(effort, traits, "reasoning.effort")
    if config is not None and summary is None:  # no summary asked: no thought text either
        config.pop("includeThoughts", None)
    return config or None


def generation_config(req: Mapping[str, Any], traits: ModelTraits, extras: Extras = NO_EXTRAS) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if (v := _number(req, "temperature", 0, 2)) is not None:
        config["temperature"] = v
    if (v := _number(req, "top_p", 0, 1)) is not None:
        config["topP"] = v
    if (n := _integer(req, "max_output_tokens", 1)) is not None:
        config["maxOutputTokens"] = n
    _text_format(req, config)
    if (thinking := _thinking(req, traits, extras)) is not None:
        config["thinkingConfig"] = thinking
    return config


# -- the whole request -------------------------------------------------------------------------

def build_request(req: Mapping[str, Any], traits: ModelTraits, images: Images | None = None,
                  extras: Extras = NO_EXTRAS) -> dict[str, Any]:
    if not isinstance(req, Mapping):
        raise TranslationError("the request body must be a JSON object", None)
    system, contents = convert_input(req, traits, images, extras.image_signatures)
    body = request_body(system, contents, *tools_and_config(req))
    return finish_body(body, generation_config(req, traits, extras), traits, extras)
