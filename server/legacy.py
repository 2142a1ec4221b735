"""hajimi's environment variables that Keyloom's settings do not name the same way.

Keyloom keeps hajimi's names and defaults where it has the setting (PASSWORD, GEMINI_API_KEYS, FAKE_STREAMING,
…). The few below meant something else there, or are not needed here: each is either carried over to the
setting that does its job, or named in a start-up warning saying what replaces it, so that nobody coming from
hajimi loses a setting silently. (WHITELIST_USER_AGENT is a setting of its own: conf/settings.toml.)
"""
from __future__ import annotations

from collections.abc import Mapping

from .settings import FALSE_WORDS, TRUE_WORDS


def _on(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name)
    if value is None:
        return None
    word = value.strip().strip("\"'").lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def hajimi_env(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """→ (the environment with hajimi's variables carried over to Keyloom's, notes to log at start)."""
    out = dict(env)
    notes: list[str] = []
    if _on(env, "ENABLE_VERTEX_EXPRESS") and "ENABLE_VERTEX" not in env:
        out["ENABLE_VERTEX"] = "true"
        notes.append("ENABLE_VERTEX_EXPRESS=true (hajimi) turns on Vertex AI: Keyloom's name is ENABLE_VERTEX; "
                     "VERTEX_EXPRESS_API_KEY keeps its name")
    if _on(env, "PUBLIC_MODE") and "INFLIGHT_SHARING" not in env:
        out["INFLIGHT_SHARING"] = "false"
        notes.append("PUBLIC_MODE=true (hajimi) turned off sharing one answer among identical requests in flight: "
                     "Keyloom's name is INFLIGHT_SHARING=false")
    storage = env.get("STORAGE_DIR", "").strip()
    if storage and not env.get("DATA_DIR"):
        out["DATA_DIR"] = storage
        notes.append(f"STORAGE_DIR (hajimi) is where Keyloom keeps its files now: Keyloom's name is DATA_DIR "
                     f"({storage})")
    if "ENABLE_STORAGE" in env:
        notes.append("ENABLE_STORAGE (hajimi) is not needed: Keyloom always keeps its counts, keys added on the "
                     "dashboard and changed settings in DATA_DIR")
    if "PRECISE_CACHE" in env or "CALCULATE_CACHE_ENTRIES" in env:
        notes.append("PRECISE_CACHE / CALCULATE_CACHE_ENTRIES (hajimi) are not used: Keyloom's cache key is always "
                     "the whole request (as PRECISE_CACHE=true was); CACHE_EXPIRY_TIME and MAX_CACHE_ENTRIES apply")
    if "INVALID_API_KEYS" in env:
        notes.append("INVALID_API_KEYS (hajimi) is not used: Keyloom takes keys Google calls invalid out of rotation "
                     "by itself (the dashboard lists them)")
    if "DASHBOARD_URL" in env:
        notes.append("DASHBOARD_URL (hajimi) is not used: Keyloom serves its dashboard itself at DASHBOARD_PATH")
    return out, notes
