"""Several providers at once: Gemini API keys, Vertex AI and two OpenAI-compatible upstreams; ids without
collisions, each model to its provider, the dashboard per provider; bad configuration stops start-up."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import KEYS, ROOT
from tests.fake_gemini import make_service_account
from tests.fake_openai import FakeOpenAI
from tests.support.admin import AdminClient

HI = [{"role": "user", "content": "hi all"}]


@pytest.fixture(scope="module")
def upstreams(loop_thread):
    remote, local = FakeOpenAI(models=["llama3.1:8b", "gemini-2.5-flash"]), FakeOpenAI(models=["llama3.1:8b"])
    for f in (remote, local):
        loop_thread.run(f.start())
    yield remote, local
    for f in (remote, local):
        loop_thread.run(f.stop())


def test_mixed_configuration(start_keyloom, fake, upstreams):
    remote, local = upstreams
    for f in upstreams:
        f.reset()
    remote.keys["sk-remote-1111111"] = "ok"
    local.keyless = True
    sa = make_service_account(fake, "mixed@proj-m.iam.gserviceaccount.com", "proj-m")
    cfg = {"openai": [
        {"name": "remote", "base_url": remote.base_url, "keys": ["sk-remote-1111111"],
         "models": ["llama3.1:8b", "gemini-2.5-flash"]},
        {"name": "local", "base_url": local.base_url, "prefix": "ollama/", "models": ["llama3.1:8b"]},
    ]}
    running = start_keyloom(ENABLE_VERTEX="true", GOOGLE_CREDENTIALS_JSON=json.dumps(sa),
                            VERTEX_BASE_URL=fake.base_url, VERTEX_MODELS="gemini-2.5-flash,gemini-2.5-pro",
                            PROVIDERS=json.dumps(cfg))
    models = running.client().models.list()
    ids = [m.id for m in models]
    assert len(ids) == len(set(ids))
    for expected in ("gemini-2.5-flash", "vertex/gemini-2.5-flash", "vertex/gemini-2.5-pro", "llama3.1:8b",
                     "remote/gemini-2.5-flash", "ollama/llama3.1:8b"):
        assert expected in ids, expected
    owners = {m.id: m.owned_by for m in models}
    assert owners["llama3.1:8b"] == "remote" and owners["ollama/llama3.1:8b"] == "local"

    c = running.client()
    routes = {
        "gemini-2.5-flash": lambda: [r for r in fake.requests if r.path.startswith("/v1beta/")],
        "vertex/gemini-2.5-flash": lambda: [r for r in fake.requests if "/publishers/google/" in r.path],
        "remote/gemini-2.5-flash": lambda: remote.requests,
        "llama3.1:8b": lambda: [s for s in remote.requests if s.body["model"] == "llama3.1:8b"],
        "ollama/llama3.1:8b": lambda: local.requests,
    }
    for mid, seen in routes.items():
        before = len(seen())
        c.chat.completions.create(model=mid, messages=HI)
        assert len(seen()) == before + 1, mid
    assert remote.requests[0].body["model"] == "gemini-2.5-flash" and remote.requests[0].key == "sk-remote-1111111"
    assert local.requests[0].key is None

    admin = AdminClient(running.url, running.kl.admin_password)
    keys = admin.ok("GET", "status")["keys"]
    providers = sorted(k["provider"] for k in keys)
    assert providers == ["gemini"] * 3 + ["local", "remote", "vertex"]
    used = {k["provider"]: k["requests"] for k in keys if k["requests"]}
    assert used["vertex"] == 1 and used["remote"] == 2 and used["local"] == 1 and used["gemini"] == 1
    rows = admin.ok("GET", "requests")["requests"]
    assert {r["model"] for r in rows} >= {"gemini-2.5-flash", "llama3.1:8b"}
    # testing keys asks each provider its own way, and every credential works
    job = admin.test_keys()
    assert job["total"] == 6 and job["ok"] == 6, job["results"]
    exported = admin.ok("POST", "keys/export", {"password": running.kl.admin_password})["keys"]
    assert sorted(exported) == sorted([*KEYS, "sk-remote-1111111"])  # no service-account handle, no empty key
    admin.close()


def start_fails(env: dict[str, str]) -> str:
    full = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "DATA_DIR": "/tmp/keyloom-bad-config", "PASSWORD": "x" * 12,
            **env}
    r = subprocess.run([sys.executable, "run.py"], cwd=ROOT, env=full, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    return r.stderr


def test_bad_configuration_stops_start_up_naming_provider_and_field(tmp_path, fake_server):
    out = start_fails({"PROVIDERS_FILE": str(tmp_path / "missing.toml")})
    assert "PROVIDERS_FILE" in out and "missing.toml" in out and "cannot be read" in out

    out = start_fails({"PROVIDERS": '[[openai]]\nname = "nourl"\nkeys = ["sk-secret-value-123"]\n'})
    assert "upstream 'nourl': base_url is missing" in out and "sk-secret-value-123" not in out

    out = start_fails({"PROVIDERS": '[[openai]]\nname = "bad"\nbase_url = "ftp://x"\ntimeout = 0\nwhat = 1\n'})
    assert "upstream 'bad': base_url must be an http" in out and "timeout" in out and "unknown field 'what'" in out

    out = start_fails({"ENABLE_VERTEX": "true", "GOOGLE_CREDENTIALS_JSON": "{not json"})
    assert "vertex: GOOGLE_CREDENTIALS_JSON is not JSON" in out

    sa = make_service_account(fake_server, "broken@proj.iam.gserviceaccount.com", "proj")
    broken = dict(sa, private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    out = start_fails({"ENABLE_VERTEX": "true", "GOOGLE_CREDENTIALS_JSON": json.dumps([sa, broken])})
    assert "GOOGLE_CREDENTIALS_JSON[1] (broken@proj.iam.gserviceaccount.com): private_key cannot be read" in out
    assert "AAAA" not in out and sa["private_key"].splitlines()[1] not in out

    out = start_fails({"ENABLE_VERTEX": "true", "GOOGLE_CREDENTIALS_JSON": json.dumps({"type": "service_account"})})
    assert "GOOGLE_CREDENTIALS_JSON[0] is not a service-account key: missing project_id" in out


def test_hajimi_style_credentials_separated_by_commas(fake_server):
    from server.providers.config import parse_credentials
    a = make_service_account(fake_server, "a@p.iam.gserviceaccount.com", "p")
    b = make_service_account(fake_server, "b@p.iam.gserviceaccount.com", "p")
    text = json.dumps(a) + ",\n" + json.dumps(b)
    assert [c["client_email"] for c in parse_credentials(text)] == [a["client_email"], b["client_email"]]
    assert parse_credentials(json.dumps([a])) == [a] and parse_credentials(json.dumps(a)) == [a]
    with pytest.raises(ValueError):
        parse_credentials("{nope")


def test_example_configuration_files_parse(monkeypatch):
    from server.providers.config import load
    from server.settings import Settings
    for name in ("providers.example.toml",):
        s = Settings.from_env({"PROVIDERS_FILE": str(ROOT / "conf" / name)})
        loaded = load(s)
        assert {u.name for u in loaded.openai} == {"ollama", "remote"}
        ollama = next(u for u in loaded.openai if u.name == "ollama")
        assert ollama.keys == () and ollama.prefix == "ollama/"
        assert len(next(u for u in loaded.openai if u.name == "remote").keys) == 2
