"""Masking of secrets: the last line of defence for logs, error messages and responses.

Gemini keys (`AIza` + 35 characters) are masked wherever they appear, whether or not
they are ours: upstream error messages quote the caller's key ("Consumer 'api_key:AIza…'
has been suspended"). Other registered secrets (our password, keys of another shape)
are replaced by their masked form too.
"""
from __future__ import annotations

import hashlib
import logging
import re
from typing import Iterable

GEMINI_KEY_RE = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")


def mask(secret: str) -> str:
    """`AIza…Ab12`: enough to tell keys apart on a page, never enough to use one."""
    if len(secret) <= 10:
        return "…" + secret[-2:] if len(secret) > 4 else "…"
    return f"{secret[:4]}…{secret[-4:]}"


def fingerprint(secret: str) -> str:
    """A short stable id for a key (truncated SHA-256), safe to store and show."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


class Redactor:
    """Replaces known secrets and anything shaped like a Gemini key."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            # Gemini-shaped keys are caught by the pattern: only other secrets need a search of their own,
            # so the cost per message does not grow with the number of keys.
            if s and len(s) >= 6 and s not in self._secrets and not GEMINI_KEY_RE.fullmatch(s):
                self._secrets.append(s)
        # longest first, so a secret that contains another is replaced whole
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if "AIza" in text:
            text = GEMINI_KEY_RE.sub(lambda m: mask(m.group(0)), text)
        for s in self._secrets:
            if s in text:
                text = text.replace(s, mask(s))
        return text


class RedactingFilter(logging.Filter):
    """Logging filter that renders each record once and masks secrets in the result."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            message = str(record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.redactor(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        return True
