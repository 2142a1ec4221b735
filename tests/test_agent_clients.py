"""Real coding-agent clients complete a task that needs a tool call and a second turn, through Keyloom, against
the fake Gemini:

- the OpenAI Agents SDK (Python): an `Agent` with a `@function_tool` over `POST /v1/responses`, whole and
  streamed;
- Codex CLI (`codex exec`, npm `@openai/codex`): its shell tool over `POST /v1/responses`;
- Claude Code (`claude -p`, npm `@anthropic-ai/claude-code`): its `Bash` tool over `POST /v1/messages`.

The fake answers the first Gemini request with a functionCall of the tool the client declared, and the request
that carries the functionResponse with a final text; each test checks that the tool ran, that its result went
back to Gemini and that the final text reached the client.

Loopback only: the Agents SDK talks to Keyloom's loopback URL and has tracing off (it would send traces to
OpenAI). Codex and Claude Code are native binaries and run in a network namespace of their own that reaches
only Keyloom's port (tests/support/netns.py), with a temporary HOME and their analytics, telemetry and update
checks off. Their configuration follows the recorded runs described in tests/data/agents/README.md. The npm
clients are installed by `npm ci --prefix tests/clients`: without them (or node, or `unshare`) their tests skip
on a developer machine and fail under CI."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agents
import pytest
from openai import AsyncOpenAI

from tests.conftest import KEYS, PASSWORD, ROOT, Running
from tests.fake_gemini import (
    DEFAULT_SIGNATURE,
    FakeGemini,
    Recorded,
    Reply,
    function_call_reply,
    text_reply,
    wire_field,
)
from tests.support.netns import Isolated, isolated_client, namespace_problem

MODEL = "gemini-2.5-flash"
BIN = ROOT / "tests" / "clients" / "node_modules" / ".bin"
CODEX = BIN / "codex"
# .npmrc has ignore-scripts, so Claude Code's postinstall never copies its native binary over the bin/claude.exe
# placeholder; cli-wrapper.cjs is its own launcher for such installs (it finds the platform package's binary).
CLAUDE = ROOT / "tests" / "clients" / "node_modules" / "@anthropic-ai" / "claude-code" / "cli-wrapper.cjs"
MARKER = "keyloom-tool-ran"
COMMAND = f"echo {MARKER}"
FINAL = "The command printed keyloom-tool-ran. Done."
SAFETY_TIMEOUT = 240  # only so that a hung client fails the test instead of hanging it


# -- the fake's side: a functionCall of the client's tool, then a final text --------------------------------------

def declared_tools(body: Any) -> list[str]:
    """The function names a Gemini request declares."""
    names = []
    for tool in wire_field(body, "tools") or []:
        for decl in wire_field(tool, "functionDeclarations") or []:
            names.append(decl.get("name"))
    return names


def function_responses(body: Any) -> list[dict[str, Any]]:
    """Every functionResponse part of a Gemini request's contents."""
    out = []
    for content in wire_field(body, "contents") or []:
        for part in content.get("parts") or []:
            resp = wire_field(part, "functionResponse")
            if isinstance(resp, dict):
                out.append(resp)
    return out


def tool_loop(fake: FakeGemini, tool: str, args: dict[str, Any], final: str = FINAL) -> None:
    """Script the fake: a request that declares `tool` and carries no functionResponse gets a call of `tool` with
    `args`; one that carries a functionResponse gets `final`. Anything else (a client's side call: a title, a
    summary) gets a short text, so that it cannot start a second tool call."""

    def respond(rec: Recorded) -> Reply:
        if function_responses(rec.body):
            return Reply(body=text_reply(final))
        if tool in declared_tools(rec.body):
            return Reply(body=function_call_reply(tool, args))
        return Reply(body=text_reply("side answer"))

    fake.responder = respond


def tool_turns(fake: FakeGemini, tool: str, args: dict[str, Any]) -> str:
    """Check the two Gemini requests of a tool loop and return what the client sent back as the tool's result
    (the functionResponse's `response`, as JSON text):

    - every Gemini request Keyloom made used a key of the pool and the model asked for;
    - exactly one request declared `tool` and got the call, exactly one carried a functionResponse;
    - that one carries the model's call back as Gemini gave it, signature included (Gemini 3 refuses a call
      without it), and the response answers it by name."""
    calls = fake.generate_calls()
    assert calls, "Keyloom sent Gemini nothing"
    assert {c.key for c in calls} <= set(KEYS), [c.key for c in calls]
    assert {c.model for c in calls} == {MODEL}
    first = [c for c in calls if tool in declared_tools(c.body) and not function_responses(c.body)]
    second = [c for c in calls if function_responses(c.body)]
    assert len(first) == 1, [declared_tools(c.body) for c in calls]
    assert len(second) == 1, [function_responses(c.body) for c in second]
    echoed = [p for c in second[0].body["contents"] if c.get("role") == "model" for p in c.get("parts") or []
              if "functionCall" in p]
    assert echoed == [{"functionCall": {"name": tool, "args": args}, "thoughtSignature": DEFAULT_SIGNATURE}]
    [resp] = function_responses(second[0].body)
    assert resp.get("name") == tool, resp
    return json.dumps(resp.get("response"))


def logged(kl: Running, loop_thread: Any) -> list[tuple[Any, ...]]:
    """Keyloom's own request log, flushed: (model, status, error) per request."""
    loop_thread.run(kl.kl.flusher.flush())
    return loop_thread.run(kl.kl.db.fetchall("SELECT model, status, error FROM request_log ORDER BY id"))


# -- 1. the OpenAI Agents SDK -------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    agents.set_tracing_disabled(True)  # the SDK would send traces of every run to api.openai.com


def weather_agent(kl: Running, ran: list[str]) -> tuple[agents.Agent[Any], AsyncOpenAI]:
    """An agent with one function tool on Keyloom's /v1/responses, and its AsyncOpenAI client (to close on the
    loop that used it)."""

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: The city's name.
        """
        ran.append(city)
        return f"sunny in {city}, 21C"

    client = AsyncOpenAI(base_url=kl.base_url, api_key=PASSWORD, max_retries=0, timeout=30.0)
    model = agents.OpenAIResponsesModel(model=MODEL, openai_client=client)
    agent = agents.Agent(name="Weather", instructions="Use the tool to answer.", tools=[get_weather], model=model)
    return agent, client


WEATHER_FINAL = "It is sunny in Paris, 21C."


def check_weather_turns(fake: FakeGemini, ran: list[str]) -> None:
    assert ran == ["Paris"]  # the tool ran once, with the arguments Gemini gave
    assert "sunny in Paris, 21C" in tool_turns(fake, "get_weather", {"city": "Paris"})


def test_the_agents_sdk_runs_a_function_tool_and_answers(start_keyloom, fake, loop_thread):
    kl = start_keyloom()
    tool_loop(fake, "get_weather", {"city": "Paris"}, WEATHER_FINAL)
    ran: list[str] = []
    agent, client = weather_agent(kl, ran)
    try:
        result = agents.Runner.run_sync(agent, "Weather in Paris?", max_turns=4)
    finally:
        # run_sync runs on this thread's default loop and leaves it open on purpose: close both here
        loop = asyncio.get_event_loop_policy().get_event_loop()
        loop.run_until_complete(client.close())
        loop.close()
        asyncio.set_event_loop(None)
    assert result.final_output == WEATHER_FINAL
    check_weather_turns(fake, ran)
    assert logged(kl, loop_thread) == [(MODEL, 200, None)] * 2


def test_the_agents_sdk_streamed_run_runs_the_tool_and_streams_the_answer(start_keyloom, fake):
    kl = start_keyloom()
    tool_loop(fake, "get_weather", {"city": "Paris"}, WEATHER_FINAL)
    ran: list[str] = []
    agent, client = weather_agent(kl, ran)

    async def run() -> tuple[Any, list[Any]]:
        async with client:
            result = agents.Runner.run_streamed(agent, "Weather in Paris?", max_turns=4)
            events = [e async for e in result.stream_events()]
        return result, events

    result, events = asyncio.run(run())
    assert result.final_output == WEATHER_FINAL
    deltas = [e.data.delta for e in events
              if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"]
    assert "".join(deltas) == WEATHER_FINAL
    items = [e.item.type for e in events if e.type == "run_item_stream_event"]
    assert items == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    check_weather_turns(fake, ran)


# -- the native clients: in a network namespace that reaches only Keyloom ----------------------------------------

def unavailable(why: str) -> None:
    """Skip on a developer machine; fail under CI, where .ci/run installs the npm clients."""
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def require_client(exe: Path, what: str) -> None:
    if shutil.which("node") is None or not exe.exists():
        unavailable(f"{what} is not installed: npm ci --prefix tests/clients (node needed)")


@pytest.fixture
def isolated(start_keyloom: Any) -> Iterator[tuple[Running, Isolated]]:
    """A Keyloom whose model aliases let Claude names through too, and a bridge into namespaces that reach only
    its port."""
    problem = namespace_problem()
    if problem is not None:
        unavailable(f"the native clients run in an isolated network namespace, which this machine cannot make: "
                    f"{problem}")
    kl = start_keyloom(MODEL_ALIASES=f"claude-*={MODEL}")
    with isolated_client(kl.kl.port) as ns:
        yield kl, ns


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment: node's directory on PATH (codex.js is a node launcher), a HOME of the test's own."""
    node = shutil.which("node")
    assert node is not None
    path = os.pathsep.join(dict.fromkeys([str(Path(node).parent), "/usr/local/bin", "/usr/bin", "/bin"]))
    return {"PATH": path, "HOME": str(home), "TERM": "dumb", "LANG": "C.UTF-8", **extra}


def scratch(tmp_path: Path) -> tuple[Path, Path]:
    """A HOME and a working directory (with a file in it, as the recordings had) under the test's tmp_path."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "notes.txt").write_text("notes\n")
    return home, work


def explain(kl: Running, fake: FakeGemini, loop_thread: Any, done: Any) -> str:
    """Everything that tells why a client run went wrong: its exit code and output, what Keyloom logged and what
    Gemini was asked."""
    asked = [(c.key in KEYS, declared_tools(c.body)[:3], function_responses(c.body)) for c in fake.generate_calls()]
    return (f"rc={done.rc}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}\n"
            f"--- Keyloom's request log\n{logged(kl, loop_thread)}\n--- Gemini requests\n{asked}")


# -- 2. Codex CLI -------------------------------------------------------------------------------------------------

# The shape of the config.toml of the recorded Codex runs (tests/data/agents/README.md), pointed at Keyloom.
CODEX_CONFIG = """\
model_provider = "keyloom"
approval_policy = "never"
check_for_update_on_startup = false

[model_providers.keyloom]
name = "Keyloom"
base_url = "{base_url}"
wire_api = "responses"
env_key = "KEYLOOM_API_KEY"

[analytics]
enabled = false

[feedback]
enabled = false
"""


def test_codex_exec_runs_its_shell_tool_through_keyloom(isolated, fake, loop_thread, tmp_path):
    require_client(CODEX, "Codex CLI")
    kl, ns = isolated
    # Codex's shell tool as it declares it for a model outside its catalogue (recorded: codex-2-gemini-model)
    args = {"cmd": COMMAND}
    tool_loop(fake, "exec_command", args)
    home, work = scratch(tmp_path)
    codex_home = home / ".codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(CODEX_CONFIG.format(base_url=kl.base_url))
    env = client_env(home, CODEX_HOME=str(codex_home), KEYLOOM_API_KEY=PASSWORD)
    # approval_policy "never" (config.toml) and the read-only sandbox (the default, as recorded; the command only
    # prints) let the command run without a prompt
    done = ns.run([str(CODEX), "exec", "--skip-git-repo-check", "--sandbox", "read-only", "-m", MODEL,
                   f"Run `{COMMAND}` and report what it printed."], env, work, SAFETY_TIMEOUT)
    why = explain(kl, fake, loop_thread, done)
    assert done.rc == 0, why
    assert done.stdout.strip() == FINAL, why  # `codex exec` prints the last message alone on stdout
    assert MARKER in tool_turns(fake, "exec_command", args), why
    assert logged(kl, loop_thread) == [(MODEL, 200, None)] * 2, why


# -- 3. Claude Code -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [MODEL, "sonnet"])
def test_claude_code_runs_bash_through_keyloom(isolated, fake, loop_thread, tmp_path, model):
    """With a Gemini model name, and with one of Claude Code's own ("sonnet", which it sends as a claude-… name
    that Keyloom's MODEL_ALIASES maps to Gemini)."""
    require_client(CLAUDE, "Claude Code")
    kl, ns = isolated
    args = {"command": COMMAND, "description": "Print a marker"}
    tool_loop(fake, "Bash", args)
    home, work = scratch(tmp_path)
    # the recorded runs' environment (tests/data/agents/README.md), pointed at Keyloom
    env = client_env(home, ANTHROPIC_BASE_URL=kl.url, ANTHROPIC_API_KEY=PASSWORD, DISABLE_TELEMETRY="1",
                     CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
                     DISABLE_ERROR_REPORTING="1")
    # --allowedTools lets Bash run without a prompt (--dangerously-skip-permissions is refused as root, which
    # the client is inside the namespace)
    done = ns.run(["node", str(CLAUDE), "-p", f"Run `{COMMAND}` and report what it printed.", "--model", model,
                   "--output-format", "json", "--allowedTools", "Bash"], env, work, SAFETY_TIMEOUT)
    why = explain(kl, fake, loop_thread, done)
    assert done.rc == 0, why
    result = json.loads(done.stdout)
    assert (result["is_error"], result["num_turns"], result["result"]) == (False, 2, FINAL), why
    assert MARKER in tool_turns(fake, "Bash", args), why
    rows = logged(kl, loop_thread)
    assert len(rows) == 2 and all(status == 200 and error is None for _, status, error in rows), why
    if model == MODEL:
        assert {m for m, _, _ in rows} == {MODEL}
    else:  # the log names both: what Claude Code asked for and the Gemini model that served it
        [served] = {m for m, _, _ in rows}
        assert served.startswith("claude-") and served.endswith(f" → {MODEL}"), served
