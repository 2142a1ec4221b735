"""Model aliases (MODEL_ALIASES): the names coding agents ask for, served by Gemini models.

Claude Code asks for `claude-…` models and Codex for `gpt-…` ones, whatever the endpoint behind them serves.
Rather than make every user learn each client's model flag, the owner maps names to models once. A name is
looked up exactly first, then against the glob patterns in the order written; the first match wins. An alias
never points at another alias (one lookup, so no loops).
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


def listed_aliases(aliases: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, target) of the aliases that are plain names: the ones a model list can show (a pattern is not
    a model id a client could pick)."""
    return [(name, target) for name, target in aliases.items() if not is_pattern(name)]
