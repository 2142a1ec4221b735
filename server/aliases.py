"""Model aliases (MODEL_ALIASES) and fallback chains (MODEL_FALLBACKS): which model serves a request.

Aliases: the names coding agents ask for, served by Gemini models.

Claude Code asks for `claude-…` models and Codex for `gpt-…` ones, whatever the endpoint behind them serves.
Rather than make every user learn each client's model flag, the owner maps names to models once. A name is
looked up exactly first, then against the glob patterns in the order written; the first match wins. An alias
never points at another alias (one lookup, so no loops).

Fallbacks: when every key is out of quota or resting for a model, the next model of its chain serves instead
(the free tier of 2026 gives Pro almost nothing and Flash little: a chain spends what is left deliberately).
"""
from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

GLOB = frozenset("*?[")


def is_pattern(name: str) -> bool:
    return any(c in GLOB for c in name)


def served_model(asked: str, aliases: Mapping[str, str]) -> str | None:
    """The model that serves `asked`, or None when no alias names it."""
    if not aliases:
        return None
    exact = aliases.get(asked)
    if exact is not None:
        return exact
    for pattern, target in aliases.items():
        if is_pattern(pattern) and fnmatchcase(asked, pattern):
            return target
    return None


def fallbacks_of(model: str, chains: str) -> list[str]:
    """The models after `model` in the first MODEL_FALLBACKS chain that names it, in order (none: []).
    `chains`: comma-separated, each `model > model > …`."""
    for chain in chains.split(","):
        names = [m.strip() for m in chain.split(">") if m.strip()]
        if model in names:
            return names[names.index(model) + 1:]
    return []


def listed_aliases(aliases: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, target) of the aliases that are plain names: the ones a model list can show (a pattern is not
    a model id a client could pick)."""
    return [(name, target) for name, target in aliases.items() if not is_pattern(name)]
