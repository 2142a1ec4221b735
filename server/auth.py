"""The two passwords: where they come from, how a request presents one, how it is checked.

hajimi defaulted PASSWORD to `123`, which leaves a public Space open to anyone, and opened its
dashboard with the same password it gave every client. Keyloom keeps the two apart: PASSWORD
(the client password, often shared with friends) opens the API and the chat playground; the
admin password (ADMIN_PASSWORD, or hajimi's WEB_PASSWORD) opens the dashboard, key export and
settings. Each one that is not set is generated at first start, kept (mode 0600) in DATA_DIR so
it survives restarts, and said once.
"""
from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from tornado.httputil import HTTPServerRequest

from .errors import ApiError, too_many_attempts
from .throttle import CredentialThrottle

PASSWORD_FILE = "password"
ADMIN_PASSWORD_FILE = "admin_password"


def load_or_create_password(configured: str, data_dir: Path, name: str = PASSWORD_FILE) -> tuple[str, bool]:
    """→ (password, True when it was generated just now). `name`: the file in DATA_DIR that keeps it."""
    if configured:
        return configured, False
    path = data_dir / name
    if path.exists():
        stored = path.read_text(encoding="utf-8").strip()
        if stored:
            return stored, False
    password = secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)
    return password, True


def unshared_passwords(redis_url: str, password: str, admin_password: str) -> str:
    """With REDIS_URL, the refusal to start (one paragraph) when a password would be generated: each replica
    would generate its own into its own DATA_DIR, and a client or a dashboard sign-in would work on one replica
    and fail on the next. Keeping a generated one in Redis instead would hand the dashboard (and key export) to
    anyone who can read the Redis, which KEY_ENCRYPTION_SECRET exists to prevent. "" when both are set."""
    if not redis_url:
        return ""
    missing = [name for name, value in (("PASSWORD", password), ("ADMIN_PASSWORD", admin_password)) if not value]
    if not missing:
        return ""
    return (f"Keyloom cannot start: with REDIS_URL every replica must use the same passwords, so "
            f"{' and '.join(missing)} must be set (a generated one would differ on each replica). Set "
            f"{' and '.join(missing)}, the same on every replica (ADMIN_PASSWORD may also come from WEB_PASSWORD).\n")


def presented_credentials(request: HTTPServerRequest) -> list[str]:
    """What the client offers as its key: Bearer token, x-goog-api-key header, ?key= (hajimi's ways), or
    x-api-key (Anthropic's clients: Claude Code with ANTHROPIC_API_KEY)."""
    found = []
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found.append(token.strip())
    for header in ("x-goog-api-key", "x-api-key"):
        value = request.headers.get(header)
        if value:
            found.append(value.strip())
    key = request.query_arguments.get("key")
    if key:
        found.append(key[-1].decode("utf-8", "replace").strip())
    return found


def password_matches(candidate: str, password: str) -> bool:
    """Constant-time comparison (on bytes, so non-ASCII input cannot raise)."""
    return hmac.compare_digest(candidate.encode("utf-8"), password.encode("utf-8"))


def matches_any(candidates: Iterable[str], password: str) -> bool:
    ok = False
    for c in candidates:
        ok |= password_matches(c, password)  # no early exit: same work whichever credential matched
    return ok


T = TypeVar("T")


class Gate:
    """The one throttled password check behind every door (see throttle.py): refused while the client is
    throttled, counted when wrong. On the success path: one dictionary lookup and the comparison."""

    def __init__(self, throttle: CredentialThrottle):
        self.throttle = throttle

    def identify(self, client: str, candidates: list[str], password: str, find: Callable[[str], T | None],
                 wrong: Callable[[], ApiError]) -> tuple[ApiError | None, T | None]:
        """Like `check`, for a door that also takes other keys (client keys): → (None, None) for `password`,
        (None, what `find` found) for another key it knows, else (the error to answer, None)."""
        wait = self.throttle.retry_after(client)
        if wait:
            return too_many_attempts(wait), None
        if matches_any(candidates, password):
            return None, None
        for c in candidates:
            found = find(c)
            if found is not None:
                return None, found
        self.throttle.failed(client)
        return wrong(), None

    def check(self, client: str, candidates: Iterable[str], password: str,
              wrong: Callable[[], ApiError]) -> ApiError | None:
        """None when one of `candidates` is `password`; else the error to answer (429 throttled, or `wrong()`)."""
        wait = self.throttle.retry_after(client)
        if wait:
            return too_many_attempts(wait)
        if matches_any(candidates, password):
            return None
        self.throttle.failed(client)
        return wrong()
