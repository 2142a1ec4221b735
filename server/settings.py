"""Typed settings built from `conf/settings.toml` and the environment.

The TOML file is the one declaration of every setting (type, default, meaning);
this module only parses values against it, so a new setting is one entry there.
Invalid values are collected and reported together, each naming its variable,
so a Space owner fixes all of them in one redeploy.
"""
from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .keyshapes import split_keys

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "conf" / "settings.toml"

TRUE_WORDS = frozenset({"true", "1", "yes", "on", "y"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", "n", ""})
_LIST_SPLIT = re.compile(r"[\s,]+")


class SettingsError(ValueError):
    """One or more settings are invalid; `problems` holds one line per variable."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SettingSpec:
    name: str
    type: str
    default: str
    help: str
    help_zh: str
    secret: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    live: bool = False  # may be changed on the dashboard while running


def load_specs(path: Path = SPEC_PATH) -> dict[str, SettingSpec]:
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    specs = {}
    for name, d in raw.items():
        specs[name] = SettingSpec(
            name=name,
            type=d["type"],
            default=str(d.get("default", "")),
            help=d["help"],
            help_zh=d["help_zh"],
            secret=bool(d.get("secret", False)),
            min=d.get("min"),
            max=d.get("max"),
            choices=tuple(d.get("choices", ())),
            live=bool(d.get("live", False)),
        )
    return specs


def split_list(text: str) -> list[str]:
    """Items separated by commas, whitespace or newlines; order kept, duplicates dropped."""
    seen: dict[str, None] = {}
    for item in _LIST_SPLIT.split(text):
        if item:
            seen.setdefault(item, None)
    return list(seen)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def parse_value(spec: SettingSpec, raw: str) -> Any:
    """Parse one raw string against its spec; raises ValueError with a reason."""
    text = _unquote(raw)
    t = spec.type
    if t == "str":
        value: Any = text
        if spec.choices:
            value = text.upper()
            if value not in spec.choices:
                raise ValueError(f"expected one of {', '.join(spec.choices)}")
        return value
    if t == "bool":
        word = text.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError("expected a boolean (true/false, 1/0, yes/no, on/off)")
    if t in ("int", "float"):
        try:
            value = int(text) if t == "int" else float(text)
        except ValueError:
            raise ValueError("expected an integer" if t == "int" else "expected a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        if spec.min is not None and value < spec.min:
            raise ValueError(f"must be at least {spec.min:g}")
        if spec.max is not None and value > spec.max:
            raise ValueError(f"must be at most {spec.max:g}")
        return value
    if t == "list":
        return split_list(text)
    if t == "keys":
        return split_keys(text)
    if t == "intmap":
        mapping: dict[str, int] = {}
        for item in split_list(text):
            name, sep, number = item.partition("=")
            if not sep or not name:
                raise ValueError(f"expected name=number pairs, got {item!r}")
            try:
                mapping[name] = int(number)
            except ValueError:
                raise ValueError(f"expected a whole number after {name}=") from None
            if mapping[name] < 0:
                raise ValueError(f"{name} must not be negative")
        return mapping
    if t == "strmap":
        pairs: dict[str, str] = {}
        for item in split_list(text):
            name, sep, target = item.partition("=")
            if not sep or not name or not target:
                raise ValueError(f"expected name=model pairs, got {item!r}")
            pairs[name] = target
        return pairs
    if t == "hops":
        word = text.lower()
        if word in ("auto", ""):
            return "auto"
        if word in TRUE_WORDS:
            return 1
        if word in FALSE_WORDS:
            return 0
        if word.isdigit() and int(word) <= 10:
            return int(word)
        raise ValueError("expected auto, true, false or a number of proxies (0-10)")
    if t == "tz":
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected a time zone name such as Asia/Shanghai") from None
        return text
    if t == "path":
        if not text.startswith("/") or any(c.isspace() or c in "?#%\\" for c in text) or "//" in text:
            raise ValueError("expected a path such as / or /admin")
        return text.rstrip("/") or "/"
    if t == "url":
        if not text:
            return ""
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return text.rstrip("/")
    if t == "proxy":
        return _proxy_url(text)
    if t == "proxies":  # UPSTREAM_PROXIES: each checked as UPSTREAM_PROXY is; the message names it by place
        urls = []
        for n, item in enumerate(split_list(text), 1):
            try:
                urls.append(_proxy_url(item))
            except ValueError as e:
                raise ValueError(f"proxy {n}: {e}") from None
        return urls
    raise ValueError(f"unknown setting type {t!r} in conf/settings.toml")


def _proxy_url(text: str) -> str:
    """An upstream proxy URL: http:// or https://, a host, a port, optionally user:password (percent-encoded).
    Checked by the parser the HTTP client uses, so what starts is what it can speak; messages never repeat the URL
    (it may hold a password)."""
    if not text:
        return ""
    from .upstream.http import Proxy  # here, not at the top: only this type needs the HTTP client

    Proxy.parse(text)  # ValueError with a reason
    if urlsplit(text).port is None:
        raise ValueError("a proxy URL needs its port, such as http://host:3128")
    return text.rstrip("/")


def format_value(spec: SettingSpec, value: Any) -> str:
    """A value written back as the text an environment variable would hold (parse_value's inverse)."""
    if spec.type == "bool":
        return "true" if value else "false"
    if spec.type in ("list", "keys", "proxies"):
        return ", ".join(value)
    if spec.type in ("intmap", "strmap"):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if spec.type == "float":
        return f"{value:g}" if float(value) == float(f"{value:g}") else repr(value)
    return str(value)


if TYPE_CHECKING:  # each setting a typed attribute, so that a misspelt one fails the type check
    from .setting_fields import SettingFields as _Fields
else:
    _Fields = object


@dataclass
class Settings(_Fields):
    """The settings in force: plain attributes (fast on the request path) plus where each came from."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    specs: dict[str, SettingSpec] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for k, v in self.values.items():
            object.__setattr__(self, k, v)

    if not TYPE_CHECKING:  # the type checker sees the typed fields; at run time, a clear message for a non-setting
        def __getattr__(self, name: str) -> Any:  # only reached for names not set in __post_init__
            raise AttributeError(f"no setting named {name}")

    def __repr__(self) -> str:  # never print secrets
        shown = {k: ("***" if self.specs.get(k) and self.specs[k].secret and v else v) for k, v in self.values.items()}
        return f"Settings({shown})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, specs: dict[str, SettingSpec] | None = None) -> Settings:
        env = os.environ if env is None else env
        specs = specs or load_specs()
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        problems: list[str] = []
        for name, spec in specs.items():
            raw = env.get(name)
            source = "environment"
            if raw is None:
                raw, source = spec.default, "default"
            try:
                values[name] = parse_value(spec, raw)
            except ValueError as e:
                shown = "(hidden)" if spec.secret else repr(raw)
                problems.append(f"{name}={shown}: {e}")
                continue
            sources[name] = source
        if problems:
            raise SettingsError(problems)
        return cls(values, sources, specs)

    def replace(self, _source: str = "dashboard", **changes: Any) -> Settings:
        """A copy with some values changed; their source becomes `_source`."""
        values = dict(self.values)
        sources = dict(self.sources)
        for k, v in changes.items():
            if k not in values:
                raise KeyError(k)
            values[k] = v
            sources[k] = _source
        return Settings(values, sources, self.specs)


def resolve_data_dir(configured: str) -> Path:
    """DATA_DIR, or /data when it exists and is writable (a Space with persistent storage), else `data` next to
    the program (not in the current directory: started from elsewhere, Keyloom would otherwise make a new,
    empty data directory there, with a new password and no history)."""
    if configured:
        return Path(configured).expanduser().resolve()
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data
    return ROOT / "data"


def markdown_table(lang: str = "en", specs: dict[str, SettingSpec] | None = None) -> str:
    specs = specs or load_specs()
    if lang == "zh":
        head = "| 变量 | 默认值 | 说明 |\n|---|---|---|\n"
    else:
        head = "| Variable | Default | Meaning |\n|---|---|---|\n"
    rows = []
    for s in specs.values():
        default = f"`{s.default}`" if s.default else ("（空）" if lang == "zh" else "(empty)")
        text = (s.help_zh if lang == "zh" else s.help).replace("|", "\\|")
        if s.live:
            text += "（实时）" if lang == "zh" else " *(live)*"
        rows.append(f"| `{s.name}` | {default} | {text} |")
    return head + "\n".join(rows) + "\n"


README_MARKERS = ("<!-- settings:begin -->", "<!-- settings:end -->")
READMES = {"en": ROOT / "README.md", "zh": ROOT / "README.zh-CN.md"}


def readme_with_table(text: str, lang: str) -> str:
    """The README text with the block between the settings markers regenerated from conf/."""
    begin, end = README_MARKERS
    head, sep1, rest = text.partition(begin)
    _, sep2, tail = rest.partition(end)
    if not (sep1 and sep2):
        raise ValueError(f"README has no {begin} … {end} block")
    return f"{head}{begin}\n{markdown_table(lang)}{end}{tail}"


PY_TYPES = {"str": "str", "int": "int", "float": "float", "bool": "bool", "list": "list[str]", "keys": "list[str]",
            "intmap": "dict[str, int]", "strmap": "dict[str, str]", "hops": "int | str", "tz": "str", "path": "str",
            "url": "str", "proxy": "str", "proxies": "list[str]"}
FIELDS_PATH = ROOT / "server" / "setting_fields.py"


def fields_module(specs: dict[str, SettingSpec] | None = None) -> str:
    """server/setting_fields.py: every setting of conf/settings.toml as a typed attribute (for the type checker)."""
    specs = specs or load_specs()
    lines = ['"""Generated from conf/settings.toml by `python -m server.settings --write-readmes`; do not edit.',
             "",
             "Each setting as a typed attribute of Settings, for the type checker only: a misspelt setting (or one",
             'used as the wrong type) fails `mypy`. A test keeps this file in step with conf/settings.toml."""',
             "from __future__ import annotations", "", "",
             "class SettingFields:"]
    lines += [f"    {s.name}: {PY_TYPES[s.type]}" for s in specs.values()]
    return "\n".join(lines) + "\n"


def _main(argv: Iterable[str]) -> int:
    args = list(argv)
    if args[:1] == ["--markdown"]:
        sys.stdout.write(markdown_table(args[1] if len(args) > 1 else "en"))
        return 0
    if args[:1] == ["--write-readmes"]:  # and the typed fields: both follow conf/settings.toml
        for lang, path in READMES.items():
            path.write_text(readme_with_table(path.read_text(encoding="utf-8"), lang), encoding="utf-8")
        FIELDS_PATH.write_text(fields_module(), encoding="utf-8")
        return 0
    sys.stderr.write("usage: python -m server.settings --markdown [en|zh] | --write-readmes (also writes "
                     "server/setting_fields.py)\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
