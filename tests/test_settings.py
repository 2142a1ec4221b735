"""Settings: parsed against conf/settings.toml, hajimi's names and defaults, clear errors, README in step."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from server.auth import load_or_create_password
from server.settings import (
    READMES,
    ROOT,
    Settings,
    SettingsError,
    load_specs,
    markdown_table,
    readme_with_table,
    resolve_data_dir,
    split_list,
)

HAJIMI_DEFAULTS = {
    "FAKE_STREAMING": True, "FAKE_STREAMING_INTERVAL": 1.0, "MAX_RETRY_NUM": 15, "MAX_EMPTY_RESPONSES": 5,
    "BLOCKED_MODELS": [], "TZ": "Asia/Shanghai", "PORT": 7860, "HOST": "0.0.0.0", "GEMINI_API_KEYS": [],
    "GEMINI_BASE_URL": "https://generativelanguage.googleapis.com",
}


def test_defaults_follow_hajimi():
    s = Settings.from_env({})
    for name, value in HAJIMI_DEFAULTS.items():
        assert getattr(s, name) == value, name
        assert s.sources[name] == "default"
    assert s.PASSWORD == ""  # not hajimi's "123": a password is generated instead


def test_every_setting_has_meaning_in_both_languages_and_a_parsable_default():
    specs = load_specs()
    for spec in specs.values():
        assert spec.help.strip() and spec.help_zh.strip(), spec.name
        assert spec.name.isupper()
    Settings.from_env({})  # all defaults parse


def test_values_from_environment():
    s = Settings.from_env({"GEMINI_API_KEYS": " k1,k2\nk3  k1 ,, ", "FAKE_STREAMING": "No", "PORT": "8080",
                           "FAKE_STREAMING_INTERVAL": "0.5", "BLOCKED_MODELS": "a, b", "PASSWORD": '"quoted"',
                           "LOG_LEVEL": "debug", "GEMINI_BASE_URL": "http://127.0.0.1:9/"})
    assert s.GEMINI_API_KEYS == ["k1", "k2", "k3"]
    assert s.FAKE_STREAMING is False and s.PORT == 8080 and s.FAKE_STREAMING_INTERVAL == 0.5
    assert s.BLOCKED_MODELS == ["a", "b"] and s.PASSWORD == "quoted" and s.LOG_LEVEL == "DEBUG"
    assert s.GEMINI_BASE_URL == "http://127.0.0.1:9"
    assert s.sources["PORT"] == "environment" and s.sources["HOST"] == "default"


@pytest.mark.parametrize("word, value", [("true", True), ("1", True), ("YES", True), ("on", True),
                                         ("false", False), ("0", False), ("no", False), ("off", False)])
def test_boolean_words(word, value):
    assert Settings.from_env({"FAKE_STREAMING": word}).FAKE_STREAMING is value


def test_invalid_values_are_all_reported_by_name():
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"FAKE_STREAMING": "maybe", "PORT": "abc", "MAX_RETRY_NUM": "0", "TZ": "Mars/Base",
                           "FAKE_STREAMING_INTERVAL": "nan", "GEMINI_BASE_URL": "ftp://x", "LOG_LEVEL": "loud"})
    text = "\n".join(e.value.problems)
    for name in ("FAKE_STREAMING", "PORT", "MAX_RETRY_NUM", "TZ", "FAKE_STREAMING_INTERVAL", "GEMINI_BASE_URL",
                 "LOG_LEVEL"):
        assert name in text
    assert len(e.value.problems) == 7


def test_invalid_secret_is_not_echoed():
    specs = load_specs()
    assert specs["PASSWORD"].secret and specs["GEMINI_API_KEYS"].secret
    s = Settings.from_env({"PASSWORD": "hunter2-secret", "GEMINI_API_KEYS": "AIzaSecretKey123"})
    assert "hunter2" not in repr(s) and "AIzaSecret" not in repr(s)


def test_split_list():
    assert split_list("a,b , c\nd\te,a") == ["a", "b", "c", "d", "e"]
    assert split_list("") == []


def test_replace_marks_overrides():
    s = Settings.from_env({}).replace(FAKE_STREAMING=False)
    assert s.FAKE_STREAMING is False and s.sources["FAKE_STREAMING"] == "dashboard"
    with pytest.raises(KeyError):
        Settings.from_env({}).replace(NOPE=1)


def test_data_dir(tmp_path, monkeypatch):
    assert resolve_data_dir(str(tmp_path)) == tmp_path
    monkeypatch.chdir(tmp_path)  # the current directory does not matter: the default is next to the program
    expected = Path("/data") if Path("/data").is_dir() and os.access("/data", os.W_OK) else ROOT / "data"
    assert resolve_data_dir("") == expected


def test_generated_password_is_strong_private_and_kept(tmp_path):
    pw, generated = load_or_create_password("", tmp_path)
    assert generated and len(pw) >= 24
    mode = stat.S_IMODE((tmp_path / "password").stat().st_mode)
    assert mode == 0o600
    again, generated_again = load_or_create_password("", tmp_path)
    assert again == pw and not generated_again
    assert load_or_create_password("mine", tmp_path) == ("mine", False)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_readme_settings_tables_match_conf(lang):
    text = READMES[lang].read_text(encoding="utf-8")
    assert readme_with_table(text, lang) == text, \
        f"{READMES[lang].name} is out of step with conf/settings.toml: run python -m server.settings --write-readmes"
    for name in load_specs():
        assert f"`{name}`" in text


def test_markdown_table_lists_every_setting_once():
    table = markdown_table("en")
    for name in load_specs():
        assert table.count(f"| `{name}` |") == 1


def test_the_typed_setting_fields_match_conf():
    """server/setting_fields.py gives each setting its type for mypy (a misspelt setting fails the type check);
    it is generated from conf/settings.toml and must not fall behind it."""
    from server.settings import FIELDS_PATH, fields_module
    assert FIELDS_PATH.read_text(encoding="utf-8") == fields_module(), \
        "run: python -m server.settings --write-readmes"
