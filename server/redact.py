"""Masking of secrets: the last line of defence for logs, error messages and responses.

Google API keys are masked wherever they appear, whether or not they are ours: upstream error
messages quote the caller's key ("Consumer 'api_key:AIza…' has been suspended"). Two shapes are
known: the classic `AIza` + 35 characters, and AI Studio's newer `AQ.` + ~50 characters (some
people report other letters before `Q.`, such as `IQ.`, so any letter is accepted there). Other
registered secrets (our passwords, keys of another shape) are replaced by their masked form too.

A secret must not get through in any spelling, so both are matched regardless of letter case, and a
text holding percent escapes is also checked in decoded form (`%41%49za…`, `%2541…`): when a secret
shows up only there, the decoded text, masked, is what comes back, since the raw one would still
spell the key for anyone who decodes it. Text that may be cut must be masked before it is cut
(`snippet`), or the head of a key outlives the pattern that would have recognised it.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote

# Key characters, ASCII only: the patterns never stretch over non-ASCII letters that `re.I` would fold.
GEMINI_KEY_RE = re.compile(r"AIza[0-9A-Z_\-]{20,}", re.I | re.A)
# At least 30 characters after the dot, so ordinary text ("Iraq.", "aqua.", "faq.html") never matches.
AUTH_KEY_RE = re.compile(r"[A-Z]Q\.[0-9A-Z_\-]{30,}", re.I | re.A)
# Keyloom's own client keys (server/client_keys.py: "kl-" and 43 URL-safe characters); those made on the
# dashboard are kept only as hashes, so their shape is the one way to know them in a message.
CLIENT_KEY_RE = re.compile(r"kl-[0-9A-Z_\-]{30,}", re.I | re.A)
MAX_DECODES = 4    # percent-decoding rounds: covers double and triple encoding with room to spare
SCAN_LIMIT = 64 * 1024  # how much of an upstream body is masked on the way to a short snippet
_ESCAPE_RE = re.compile(r"%[0-9A-Fa-f]{2}")
_WORD_RE = re.compile(r"\S+")


def mask(secret: str) -> str:
    """`AIza…Ab12`, `AQ.A…yyyy`: enough to tell keys apart on a page, never enough to use one."""
    if len(secret) <= 10:
        return "…" + secret[-2:] if len(secret) > 4 else "…"
    return f"{secret[:4]}…{secret[-4:]}"


def fingerprint(secret: str) -> str:
    """A short stable id for a key (truncated SHA-256), safe to store and show."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def is_key_shaped(secret: str) -> bool:
    """Caught by the key patterns wherever it appears, so it needs no search of its own."""
    return bool(GEMINI_KEY_RE.fullmatch(secret) or AUTH_KEY_RE.fullmatch(secret) or CLIENT_KEY_RE.fullmatch(secret))


def _masked(m: re.Match[str]) -> str:
    return mask(m.group(0))


class Redactor:
    """Replaces registered secrets and anything shaped like a Google API key, in any spelling."""

    def __init__(self, secrets: Iterable[str] = ()):
        # (length, probe, pattern), longest first so that a secret holding another is replaced whole
        self._secrets: list[tuple[int, str, re.Pattern[str]]] = []
        self._known: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Register secrets. Each gets a case-folded probe for a cheap `in` test on every message and a
        compiled case-insensitive pattern that runs only when the probe hits: one alternation of all
        secrets was measured far slower (sre tries every branch at every position), and key-shaped
        secrets need neither, so the cost per message does not grow with the size of the pool."""
        new: list[tuple[int, str, re.Pattern[str]]] = []
        for s in secrets:
            if not s or len(s) < 6 or s in self._known or is_key_shaped(s):
                continue
            self._known.add(s)
            # `re.I` folds one character at a time, so an upper-cased "ß" ("SS") needs a pattern of its own
            for spelling in {s.lower(): s, s.upper().lower(): s.upper()}.values():
                # a space may come as `+` (form encoding): probe with the longest space-free piece
                probe = max(spelling.casefold().split(" "), key=len)
                pattern = re.compile("[ +]".join(re.escape(part) for part in spelling.split(" ")), re.I)
                new.append((len(spelling), probe, pattern))
        if new:
            # a new list, not an in-place sort: a log call on another thread must never see it half-built
            self._secrets = sorted(self._secrets + new, key=lambda e: e[0], reverse=True)

    def _mask(self, text: str) -> str:
        folded = text.casefold()  # only decides which patterns run (casefold() is cheaper than lower())
        for _, probe, pattern in self._secrets:
            if probe in folded:
                text = pattern.sub(_masked, text)
        if "aiza" in folded:
            text = GEMINI_KEY_RE.sub(_masked, text)
        if "q" in folded and "q." in folded:  # one rare letter first: a two-letter search costs more
            text = AUTH_KEY_RE.sub(_masked, text)
        if "kl-" in folded:
            text = CLIENT_KEY_RE.sub(_masked, text)
        return text

    def __call__(self, text: str) -> str:
        if not text:
            return text
        text = self._mask(text)
        if "%" not in text:
            return text
        # Mask each decoded level before decoding the next: decoding can also break a key that an
        # earlier level spelled out (`%2AIza…` turns into `*Iza…`).
        decoded, found = text, False
        for _ in range(MAX_DECODES):
            plain = unquote(decoded, errors="replace")
            if plain == decoded:
                break
            decoded = self._mask(plain)
            found = found or decoded != plain
        else:
            if unquote(decoded, errors="replace") != decoded:
                # deeper than anything legitimate: drop every word still holding escapes rather than
                # vouch for what they spell (their hex digits alone could)
                return _WORD_RE.sub(lambda m: "…" if _ESCAPE_RE.search(m.group(0)) else m.group(0), decoded)
        return decoded if found else text


def snippet(body: bytes | str, redact: Callable[[str], str], limit: int = 200) -> str:
    """The start of an upstream body for an error message: masked first, then cut to `limit` characters.

    Only a bounded prefix is masked (a body can be megabytes); that prefix ends at whitespace, so the
    scan itself never cuts a key in two."""
    text = body[:SCAN_LIMIT].decode("utf-8", "replace") if isinstance(body, bytes) else body[:SCAN_LIMIT]
    if len(body) > SCAN_LIMIT:
        text = text[:max(map(text.rfind, " \n\r\t")) + 1]
    text = redact(text).strip()
    return text if len(text) <= limit else text[:limit] + "…"


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
