"""What a Gemini model accepts, decided from its id (and its ListModels entry when we have one).

Translation needs to know a few things the OpenAI request does not say: whether the
model thinks (and by budget or by level), whether it takes a system instruction,
which safety threshold it accepts. Kept pure so the rules are tested as a table.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .gemini_facts import is_chat_model

# Models that reject threshold OFF (SillyTavern's list); they get BLOCK_NONE.
_LEGACY_SAFETY = ("gemini-1.5-pro-001", "gemini-1.5-flash-001", "gemini-1.5-flash-8b-exp-0827",
                  "gemini-1.5-flash-8b-exp-0924", "gemini-pro", "gemini-1.0-pro")


@dataclass(frozen=True)
class ModelTraits:
    thinks: bool = False
    thinking_style: str = "budget"  # "budget" (2.5: thinkingBudget) or "level" (3.x: thinkingLevel)
    can_disable_thinking: bool = True
    max_budget: int = 24576
    pro: bool = False
    system_instruction: bool = True
    safety_threshold: str = "OFF"
    thought_signatures: bool = False  # 3.x validates thought signatures on function calls


def traits_for(model: str, listed: Mapping[str, Any] | None = None) -> ModelTraits:
    m = model.lower()
    if m.startswith("models/"):
        m = m[len("models/"):]
    gemini3 = m.startswith("gemini-3")
    pro = "-pro" in m
    if listed is not None and "thinking" in listed:
        thinks = bool(listed.get("thinking"))
    else:
        thinks = (m.startswith(("gemini-2.5", "gemini-3")) or "thinking" in m) and is_chat_model(m)
    return ModelTraits(
        thinks=thinks,
        thinking_style="level" if gemini3 else "budget",
        can_disable_thinking=thinks and not pro,
        max_budget=32768 if pro else 24576,
        pro=pro,
        system_instruction=not m.startswith("gemma"),
        safety_threshold="BLOCK_NONE" if m.startswith(_LEGACY_SAFETY) else "OFF",
        thought_signatures=gemini3,
    )
