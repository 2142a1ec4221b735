"""What Gemini API keys look like, and how people paste them: one home for both (the pool, the settings,
the dashboard and the masking all ask here)."""
from __future__ import annotations

import re

# The shapes of Gemini API keys Google issues: AI Studio's classic `AIza` + 35 characters, and (since 2026)
# its authorization keys `AQ.` + about 50 (reports of other `<letter>Q.` prefixes exist; see redact.py).
GEMINI_KEY_SHAPES = re.compile(r"^(?:AIza[0-9A-Za-z_\-]{35}|[A-Z]Q\.[0-9A-Za-z_\-]{30,200})$")
# What people paste around keys: quotes, a JSON list's brackets and commas, Markdown backticks, angle brackets.
KEY_SEPARATORS = re.compile(r"[\s,;|\"'`<>()\[\]{}]+")


def looks_like_gemini_key(text: str) -> bool:
    return GEMINI_KEY_SHAPES.match(text) is not None


def split_keys(text: str, unique: bool = True) -> list[str]:
    """Keys out of text as people paste it: `AIza…,AIza…`, one per line, `"AIza…","AIza…"`, a JSON list.
    Order kept; duplicates dropped unless `unique` is False (the dashboard reports them)."""
    items = [t for t in KEY_SEPARATORS.split(text) if t]
    return list(dict.fromkeys(items)) if unique else items


def valid_key_text(secret: str) -> bool:
    """A key goes into an HTTP header: printable ASCII without spaces, nothing else."""
    return 8 <= len(secret) <= 512 and all(33 <= ord(ch) < 127 for ch in secret)
