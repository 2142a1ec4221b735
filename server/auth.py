"""The client password: where it comes from, how a request presents it, how it is checked.

hajimi defaulted PASSWORD to `123`, which leaves a public Space open to anyone.
Keyloom instead generates a strong password at first start when none is set,
keeps it (mode 0600) in DATA_DIR so it survives restarts, and says it once.
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from tornado.httputil import HTTPServerRequest

PASSWORD_FILE = "password"


def load_or_create_password(configured: str, data_dir: Path) -> tuple[str, bool]:
    """→ (password, True when it was generated just now)."""
    if configured:
        return configured, False
    path = data_dir / PASSWORD_FILE
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


def presented_credentials(request: HTTPServerRequest) -> list[str]:
    """What the client offers as its key: Bearer token, x-goog-api-key header, or ?key= (hajimi's ways)."""
    found = []
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            found.append(token.strip())
    goog = request.headers.get("x-goog-api-key")
    if goog:
        found.append(goog.strip())
    key = request.query_arguments.get("key")
    if key:
        found.append(key[-1].decode("utf-8", "replace").strip())
    return found


def password_matches(candidate: str, password: str) -> bool:
    """Constant-time comparison (on bytes, so non-ASCII input cannot raise)."""
    return hmac.compare_digest(candidate.encode("utf-8"), password.encode("utf-8"))


def authorized(request: HTTPServerRequest, password: str) -> bool:
    ok = False
    for c in presented_credentials(request):
        ok |= password_matches(c, password)  # no early exit: same work whichever credential matched
    return ok
