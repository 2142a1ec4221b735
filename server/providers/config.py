"""Reading the providers' configuration: Vertex AI from the settings, OpenAI-compatible upstreams from a
TOML file (PROVIDERS_FILE) and/or inline text (PROVIDERS). Every problem is reported at once, naming the
provider and the field, and stops start-up (exit 2) like a bad setting."""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..keyshapes import valid_key_text
from ..settings import ROOT, Settings, SettingsError

DEFAULT_FILE = ROOT / "conf" / "providers.toml"
NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}$")
RESERVED = {"gemini", "vertex"}
SA_FIELDS = ("type", "project_id", "private_key_id", "private_key", "client_email", "token_uri")


@dataclass(frozen=True)
class OpenAIUpstream:
    name: str
    base_url: str                      # up to and including /v1 (requests go to {base_url}/chat/completions)
    keys: tuple[str, ...] = ()         # none: a local server without authentication
    models: tuple[str, ...] | None = None  # None: ask its /models
    prefix: str | None = None          # None: only where an id collides with another provider's
    daily_limit: int = 0               # requests per key per model per quota day; 0: none
    timeout: float = 300.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VertexConfig:
    credentials: tuple[dict[str, Any], ...] = ()
    express_keys: tuple[str, ...] = ()
    location: str = "global"
    project: str = ""
    base_url: str = ""
    models: tuple[str, ...] = ()
    prefix: str = "vertex/"


@dataclass
class Providers:
    vertex: VertexConfig | None = None
    openai: list[OpenAIUpstream] = field(default_factory=list)


def parse_credentials(text: str) -> list[Any]:
    """One JSON object, a JSON list, or objects separated by commas (as hajimi accepted)."""
    text = text.strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        value = json.loads(f"[{text}]")  # raises ValueError on its own when it is not that either
    return value if isinstance(value, list) else [value]


def _vertex(s: Settings, problems: list[str]) -> VertexConfig | None:
    if not s.ENABLE_VERTEX:
        return None
    creds: list[dict[str, Any]] = []
    try:
        parsed = parse_credentials(s.GOOGLE_CREDENTIALS_JSON)
    except ValueError:
        problems.append("vertex: GOOGLE_CREDENTIALS_JSON is not JSON (expected a service-account key, a list of "
                        "them, or several separated by commas)")
        parsed = []
    for i, c in enumerate(parsed):
        where = f"vertex: GOOGLE_CREDENTIALS_JSON[{i}]"
        if not isinstance(c, dict):
            problems.append(f"{where} is not a JSON object")
            continue
        missing = [f for f in SA_FIELDS if not isinstance(c.get(f), str) or not c.get(f)]
        if missing:
            problems.append(f"{where} is not a service-account key: missing {', '.join(missing)}")
            continue
        if c["type"] != "service_account":
            problems.append(f"{where}: type is {c['type']!r}, expected 'service_account'")
            continue
        if "BEGIN PRIVATE KEY" not in c["private_key"] and "BEGIN RSA PRIVATE KEY" not in c["private_key"]:
            problems.append(f"{where} ({c['client_email']}): private_key is not a PEM private key")
            continue
        try:
            from google.oauth2 import service_account
            service_account.Credentials.from_service_account_info(c)
        except Exception as e:
            problems.append(f"{where} ({c['client_email']}): private_key cannot be read ({type(e).__name__})")
            continue
        creds.append(c)
    if not creds and not s.VERTEX_EXPRESS_API_KEY:
        problems.append("vertex: ENABLE_VERTEX is true but neither GOOGLE_CREDENTIALS_JSON nor "
                        "VERTEX_EXPRESS_API_KEY holds a credential")
    if not re.match(r"^[a-z0-9\-]+$", s.VERTEX_LOCATION):
        problems.append(f"vertex: VERTEX_LOCATION {s.VERTEX_LOCATION!r} is not a location such as us-central1 "
                        "or global")
    if not s.VERTEX_MODELS:
        problems.append("vertex: VERTEX_MODELS is empty")
    return VertexConfig(tuple(creds), tuple(s.VERTEX_EXPRESS_API_KEY), s.VERTEX_LOCATION, s.VERTEX_PROJECT_ID,
                        s.VERTEX_BASE_URL, tuple(s.VERTEX_MODELS), s.VERTEX_MODEL_PREFIX)


def _text(where: str, text: str, problems: list[str]) -> list[Any]:
    """The upstream tables of one TOML or JSON text: `[[openai]]` tables, or a JSON list / {"openai": [...]}."""
    stripped = text.lstrip()
    try:
        data: Any = json.loads(text) if stripped.startswith(("[", "{")) and not stripped.startswith("[[") \
            else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        problems.append(f"{where}: cannot be read as TOML or JSON: {e}")
        return []
    if isinstance(data, dict):
        unknown = [k for k in data if k != "openai"]
        if unknown:
            problems.append(f"{where}: unknown section(s) {', '.join(unknown)} (expected [[openai]] tables)")
        data = data.get("openai", [])
    if not isinstance(data, list):
        problems.append(f"{where}: expected a list of upstreams")
        return []
    return data


def _upstream(where: str, raw: Any, problems: list[str]) -> OpenAIUpstream | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: each upstream must be a table")
        return None
    name = raw.get("name")
    label = f"{where}: upstream {name!r}" if isinstance(name, str) and name else f"{where}: an upstream"
    before = len(problems)
    if not isinstance(name, str) or not NAME.match(name or ""):
        problems.append(f"{label}: name must be 1-32 lower-case letters, digits, - or _")
    elif name in RESERVED:
        problems.append(f"{label}: name {name!r} is reserved")
    known = {"name", "base_url", "keys", "models", "prefix", "daily_limit", "timeout", "headers"}
    for k in raw:
        if k not in known:
            problems.append(f"{label}: unknown field {k!r}")
    base = raw.get("base_url")
    if not isinstance(base, str) or not base:
        problems.append(f"{label}: base_url is missing")
    else:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"{label}: base_url must be an http:// or https:// URL")
    keys = raw.get("keys", [])
    if isinstance(keys, str):
        keys = [k for k in re.split(r"[\s,]+", keys) if k]
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        problems.append(f"{label}: keys must be a list of strings")
        keys = []
    bad = [i for i, k in enumerate(keys) if not valid_key_text(k)]
    if bad:  # a key goes into an HTTP header: a "…" or a space in it would fail every request
        problems.append(f"{label}: keys[{bad[0]}] is not a usable key (it must be 8 to 512 printable ASCII "
                        "characters without spaces; a placeholder such as \"sk-…\" needs the real key)")
        keys = [k for k in keys if valid_key_text(k)]
    models = raw.get("models", "auto")
    if models == "auto":
        models = None
    elif not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        problems.append(f"{label}: models must be a list of model ids or \"auto\" (ask its /models)")
        models = None
    prefix = raw.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or not re.match(r"^[A-Za-z0-9._\-/:]*$", prefix)):
        problems.append(f"{label}: prefix must be a short string such as \"ollama/\"")
    limit = raw.get("daily_limit", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        problems.append(f"{label}: daily_limit must be a whole number ≥ 0")
    timeout = raw.get("timeout", 300)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
        problems.append(f"{label}: timeout must be seconds between 1 and 3600")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        problems.append(f"{label}: headers must be a table of strings")
        headers = {}
    if len(problems) > before or not isinstance(base, str) or not isinstance(name, str):
        return None
    return OpenAIUpstream(name, base.rstrip("/"), tuple(dict.fromkeys(keys)), tuple(models) if models else None,
                          prefix, limit, float(timeout), tuple(headers.items()))


def load(s: Settings) -> Providers:
    """Raises SettingsError listing every problem."""
    problems: list[str] = []
    vertex = _vertex(s, problems)
    sources: list[tuple[str, str]] = []
    path = Path(s.PROVIDERS_FILE) if s.PROVIDERS_FILE else (DEFAULT_FILE if DEFAULT_FILE.exists() else None)
    if path is not None:
        try:
            sources.append((f"PROVIDERS_FILE {path}", path.read_text(encoding="utf-8")))
        except OSError as e:
            problems.append(f"PROVIDERS_FILE {path}: cannot be read ({e.strerror or e})")
    if s.PROVIDERS.strip():
        sources.append(("PROVIDERS", s.PROVIDERS))
    upstreams: list[OpenAIUpstream] = []
    for where, text in sources:
        for raw in _text(where, text, problems):
            u = _upstream(where, raw, problems)
            if u is None:
                continue
            if any(x.name == u.name for x in upstreams):
                problems.append(f"{where}: upstream {u.name!r} is defined twice")
                continue
            upstreams.append(u)
    if problems:
        raise SettingsError(problems)
    return Providers(vertex, upstreams)
