"""What every dialect's translation shares on the Gemini side of a request. Pure: dicts in, dicts out.

Each API dialect (Chat Completions, Responses, Messages) has its own translator into a Gemini
`GenerateContentRequest`, but the end of the job is the same for all of them, so it lives here once:

- the safety settings Keyloom always sends (off, at the threshold the model takes);
- Keyloom's own additions from model suffixes and settings (`Extras`): the search tool and its prompt, the
  thinking variant, whether thought summaries are asked for, the random string;
- thinking effort → thinkingConfig per model family (`thinking_config`), which every dialect's own effort
  field maps onto.

Thought signatures a client hands back are left sealed by the translators; the service unseals them
(`server/signatures.py`), learning which key issued them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .traits import ModelTraits

SAFETY_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
)
# Google's documented placeholder for a function call whose signature is unknown (history from elsewhere) or
# was refused (https://ai.google.dev/gemini-api/docs/thought-signatures).
DUMMY_SIGNATURE = "skip_thought_signature_validator"

BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


class TranslationError(ValueError):
    """The request cannot be expressed for Gemini; becomes a 400 naming `param`, in the dialect's own shape."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Extras:
    """What Keyloom adds to a request beyond the client's own fields (model suffixes and settings)."""

    search_prompt: str | None = None  # a -search model: add the googleSearch tool and this text
    thinking: str | None = None       # -nothinking / -max: "none" / "max", in place of the client's effort
    show_thinking: bool = True        # SHOW_THINKING: ask for thought summaries
    random_string: str | None = None  # RANDOM_STRING: a part of its own, outside the meaningful text
    image_signatures: Callable[[str], str | None] | None = None  # signatures of images Gemini drew, by data


NO_EXTRAS = Extras()


def request_body(system: list[dict[str, Any]], contents: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                 tool_config: dict[str, Any] | None) -> dict[str, Any]:
    """The GenerateContentRequest's contents, system instruction and tools, each only when there is one."""
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if tools:
        body["tools"] = tools
    if tool_config:
        body["toolConfig"] = tool_config
    return body


def place_system(system: list[dict[str, Any]], contents: list[dict[str, Any]], traits: ModelTraits,
                 field: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """→ (systemInstruction parts, contents) as the model takes them: a model without system instructions
    (Gemma) gets the system text at the start of the first user turn; a request of only system text becomes
    the user's turn (Gemini needs one). Nothing at all is refused, naming the dialect's `field`."""
    if system and not traits.system_instruction:
        text = "\n\n".join(p["text"] for p in system)
        if contents and contents[0]["role"] == "user":
            contents[0]["parts"].insert(0, {"text": text})
        else:
            contents.insert(0, {"role": "user", "parts": [{"text": text}]})
        system = []
    if not contents:
        if not system:
            raise TranslationError(f"{field} holds no content to send", field)
        contents, system = [{"role": "user", "parts": system}], []
    return system, contents


def thinking_config(effort: Any, traits: ModelTraits, param: str = "reasoning_effort") -> dict[str, Any] | None:
    """An effort (none … max) → thinkingConfig: a budget for 2.5, a level for 3.x, never both; None when the
    model does not think (a thinking setting for such a model is dropped, not an error). No effort: the
    model's own default, with thought summaries."""
    if not traits.thinks:
        return None
    if effort is None:
        return {"includeThoughts": True}
    if not isinstance(effort, str) or effort.lower() not in EFFORTS:
        raise TranslationError(f"{param} must be one of {', '.join(EFFORTS)}", param)
    effort = effort.lower()
    if traits.thinking_style == "level":
        if effort in ("none", "minimal"):
            level = "LOW" if traits.pro else "MINIMAL"
        elif effort == "low":
            level = "LOW"
        elif effort == "medium":
            level = "HIGH" if traits.pro else "MEDIUM"
        else:
            level = "HIGH"
        return {"includeThoughts": True, "thinkingLevel": level}
    if effort == "none":
        if traits.can_disable_thinking:
            return {"thinkingBudget": 0}
        return {"includeThoughts": True, "thinkingBudget": 128}
    budget = traits.max_budget if effort in ("xhigh", "max") else min(BUDGETS[effort], traits.max_budget)
    return {"includeThoughts": True, "thinkingBudget": budget}


def budget_config(budget: int, traits: ModelTraits) -> dict[str, Any] | None:
    """A token budget for thinking (Anthropic's `budget_tokens`) → thinkingConfig: the budget itself for 2.5
    (within what the model takes), the nearest level for 3.x."""
    if not traits.thinks:
        return None
    if traits.thinking_style == "level":
        level = "LOW" if budget <= BUDGETS["low"] else "MEDIUM" if budget <= BUDGETS["medium"] and not traits.pro \
            else "HIGH"
        return {"includeThoughts": True, "thinkingLevel": level}
    if budget <= 0:
        return {"thinkingBudget": 0} if traits.can_disable_thinking else {"includeThoughts": True,
                                                                          "thinkingBudget": 128}
    return {"includeThoughts": True, "thinkingBudget": max(128, min(budget, traits.max_budget))}


def _add_random_part(body: dict[str, Any], contents: list[dict[str, Any]], text: str,
                     traits: ModelTraits) -> None:
    """A random part where it changes no meaning: its own part in the system instruction, else its own part
    at the start of the first turn when that turn is not the last user turn, else a system instruction of
    its own (models without system instructions then go without)."""
    if "systemInstruction" in body:
        body["systemInstruction"]["parts"].append({"text": text})
    elif len(contents) > 1:
        contents[0]["parts"].insert(0, {"text": text})
    elif traits.system_instruction:
        body["systemInstruction"] = {"parts": [{"text": text}]}


def _add_search(body: dict[str, Any], contents: list[dict[str, Any]], prompt: str) -> None:
    tools = body.setdefault("tools", [])
    if not any("googleSearch" in t for t in tools):
        tools.append({"googleSearch": {}})
    if prompt:
        for c in reversed(contents):
            if c.get("role") == "user":
                c["parts"].append({"text": prompt})
                break


def _thinking_shown(config: dict[str, Any], show: bool) -> None:
    thinking = config.get("thinkingConfig")
    if show or not isinstance(thinking, dict):
        return
    thinking.pop("includeThoughts", None)
    if not thinking:
        del config["thinkingConfig"]


def finish_body(body: dict[str, Any], config: dict[str, Any], traits: ModelTraits, extras: Extras) -> dict[str, Any]:
    """Complete a translated request: safety settings, the generation config (thought summaries only when
    SHOW_THINKING), then the search tool and the random string of the extras. `body` holds `contents` and
    whatever the dialect put there (systemInstruction, tools, toolConfig)."""
    body["safetySettings"] = [{"category": c, "threshold": traits.safety_threshold} for c in SAFETY_CATEGORIES]
    _thinking_shown(config, extras.show_thinking)
    if config:
        body["generationConfig"] = config
    if extras.search_prompt is not None:
        _add_search(body, body["contents"], extras.search_prompt)
    if extras.random_string:
        _add_random_part(body, body["contents"], extras.random_string, traits)
    return body
