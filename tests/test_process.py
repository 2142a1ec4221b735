"""Keyloom as a real process: the offline demo, start-up errors, the generated password, graceful stop,
no key or password in the log, and what the Dockerfile gives a HuggingFace Space."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from tests.conftest import KEYS, PASSWORD
from tests.support.closing import track
from tests.support.proc import ROOT, KeyloomProcess
from tests.support.wait import wait_until


def test_demo_answers_offline_with_no_key(tmp_path):
    # A base URL nobody can reach (TEST-NET-1): the demo must not use it, nor any network.
    p = KeyloomProcess("--demo", env={"GEMINI_BASE_URL": "http://192.0.2.1"}, data_dir=tmp_path).wait_ready()
    try:
        client = track(openai.OpenAI(base_url=p.url + "/v1", api_key=p.password(), max_retries=0, timeout=20))
        models = [m.id for m in client.models.list()]
        assert "gemini-2.5-flash" in models
        reply = client.chat.completions.create(model="gemini-2.5-flash",
                                               messages=[{"role": "user", "content": "hi demo"}])
        assert "demo" in reply.choices[0].message.content and "hi demo" in reply.choices[0].message.content
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="gemini-2.0-flash", messages=[{"role": "user", "content": "stream it"}], stream=True) if c.choices)
        assert "stream it" in text
        vectors = client.embeddings.create(model="gemini-embedding-001", input=["a", "b"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 768
        native = httpx.post(p.url + "/v1beta/models/gemini-2.5-flash:generateContent",
                            headers={"x-goog-api-key": p.password()}, timeout=20,
                            json={"contents": [{"role": "user", "parts": [{"text": "native demo"}]}]})
        assert native.status_code == 200 and "native demo" in native.text
    finally:
        assert p.stop() == 0
    out = p.output()
    assert "DEMO MODE" in out and "192.0.2.1" not in out


def test_generated_password_is_printed_once_and_reused(tmp_path):
    first = KeyloomProcess(env={}, data_dir=tmp_path).wait_ready()
    pw = first.password()
    assert first.stop() == 0
    assert first.output().count(pw) == 1  # once, in the start-up banner
    second = KeyloomProcess(env={}, data_dir=tmp_path).wait_ready()
    try:
        r = __import__("httpx").get(second.url + "/v1/models", headers={"Authorization": f"Bearer {pw}"})
        assert r.status_code == 200
    finally:
        second.stop()
    assert pw not in second.output() and "generated at first start" in second.output()


@pytest.mark.parametrize("env, names", [
    ({"FAKE_STREAMING": "maybe"}, ["FAKE_STREAMING"]),
    ({"PORT": "seventy", "MAX_RETRY_NUM": "x"}, ["PORT", "MAX_RETRY_NUM"]),
    ({"FAKE_STREAMING_INTERVAL": "-1", "TZ": "Nowhere/City"}, ["FAKE_STREAMING_INTERVAL", "TZ"]),
])
def test_invalid_settings_stop_startup_with_status_2_naming_the_variable(tmp_path, env, names):
    p = KeyloomProcess(env=env, data_dir=tmp_path)
    code = p.proc.wait(15)
    p._reader.join(5)
    assert code == 2
    for name in names:
        assert name in p.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_lets_an_in_flight_request_finish_then_exits_0(tmp_path, sig):
    p = KeyloomProcess("--demo", env={"PASSWORD": PASSWORD}, data_dir=tmp_path).wait_ready()
    result = {}

    def slow_request():  # the demo's pro model takes 2.5 s
        client = track(openai.OpenAI(base_url=p.url + "/v1", api_key=PASSWORD, max_retries=0, timeout=20))
        result["reply"] = client.chat.completions.create(
            model="gemini-2.5-pro", messages=[{"role": "user", "content": "slow one"}]).choices[0].message.content

    t = threading.Thread(target=slow_request)
    t.start()
    wait_until(lambda: httpx.get(p.url + "/health").json()["in_flight"] == 1, "the slow request to be in flight")
    assert p.stop(sig) == 0
    t.join(10)
    assert "slow one" in result.get("reply", "")
    assert "stopped: counters written, database closed" in p.output()


def test_keys_and_password_never_reach_the_log(tmp_path, fake, loop_thread):
    fake.keys[KEYS[0]] = "suspended"   # Google's message for this one quotes the key itself
    fake.keys[KEYS[1]] = "invalid"
    p = KeyloomProcess(env={"GEMINI_API_KEYS": ",".join(KEYS), "GEMINI_BASE_URL": fake.base_url,
                            "PASSWORD": PASSWORD, "LOG_LEVEL": "DEBUG"}, data_dir=tmp_path).wait_ready()
    try:
        client = track(openai.OpenAI(base_url=p.url + "/v1", api_key=PASSWORD, max_retries=0, timeout=20))
        for _ in range(4):
            client.chat.completions.create(model="gemini-2.0-flash", messages=[{"role": "user", "content": "x"}])
        import httpx
        httpx.get(f"{p.url}/v1/models?key={PASSWORD}")
        httpx.get(f"{p.url}/v1/models?key=wrong-guess")
    finally:
        p.stop()
    out = p.output()
    assert "suspended" in out.lower() or "disabled" in out.lower() or "API key not valid" in out
    for secret in [*KEYS, PASSWORD]:
        assert secret not in out, "a secret reached the log"
    assert "key=" not in out


def test_dockerfile_meets_huggingface_space_needs():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    assert re.search(r"useradd[^\n]*--uid 1000", text)
    assert re.search(r"^USER 1000\s*$", text, re.M)
    assert re.search(r"^EXPOSE 7860\s*$", text, re.M)
    assert "PORT=7860" in text
    assert re.search(r'^CMD \["python", "run.py"\]\s*$', text, re.M)
    for path in ("requirements.txt", "run.py", "server/", "conf/"):
        assert path in text
    readme = (ROOT / "README.md").read_text()
    front = readme.split("---")[1]
    assert "sdk: docker" in front and "app_port: 7860" in front


def test_run_py_help_and_version():
    out = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--demo" in out.stdout


def test_sigusr1_prints_every_threads_stack_and_keyloom_goes_on(tmp_path):
    """`kill -USR1` (README: for a process that seems stuck) prints the stacks and changes nothing else."""
    p = KeyloomProcess("--demo", env={}, data_dir=tmp_path).wait_ready()
    try:
        before = len(p.output())  # (the generated password is announced once at the first start, on purpose)
        p.proc.send_signal(signal.SIGUSR1)
        # the main thread's stack ends (outermost last) in run.py: then all of it is there
        out = wait_until(lambda: "run.py" in (o := p.output()[before:]).partition("Current thread")[2] and o,
                         "the stacks in the log")
        assert "server/main.py" in out.partition("Current thread")[2]
        assert p.password() not in out  # names of functions, files and lines; no values
        assert httpx.get(p.url + "/health", timeout=20).status_code == 200
    finally:
        assert p.stop() == 0, p.output()
