"""Shared fixtures: one background loop per test process, one fake Gemini per module, a fresh
Keyloom per test (cheap: it is an object and a listening socket), and official SDK clients."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.app import Keyloom  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.fake_gemini import FakeGemini  # noqa: E402
from tests.support.closing import close_all, track  # noqa: E402
from tests.support.loop import LoopThread  # noqa: E402

PASSWORD = "test-password-0123456789"


def make_key(i: int) -> str:
    """A key shaped like a real Gemini key: `AIza` + 35 characters."""
    body = f"SyFakeKey{i:04d}"  # at the end, so that masked forms (AIza…0001) tell test keys apart
    return "AIza" + "abcdefghijklmnopqrstuvwxyz0123456789"[: 35 - len(body)] + body


KEYS = [make_key(i) for i in range(1, 4)]


@dataclass
class Running:
    kl: Keyloom
    url: str
    loop: LoopThread
    _client: openai.OpenAI | None = None

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def client(self, **kw: Any) -> openai.OpenAI:
        if not kw:  # the default client is reused: creating one costs an SSL context
            if self._client is None:
                self._client = self.client(api_key=PASSWORD)
            return self._client
        kw.setdefault("api_key", PASSWORD)
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20.0)
        return track(openai.OpenAI(base_url=kw.pop("base_url", self.base_url), **kw))

    def http(self, **kw: Any) -> httpx.Client:
        kw.setdefault("timeout", 20.0)
        return httpx.Client(base_url=self.url, **kw)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {PASSWORD}"}


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def fake_server(loop_thread: LoopThread) -> Iterator[FakeGemini]:
    fake = FakeGemini()
    loop_thread.run(fake.start())
    yield fake
    loop_thread.run(fake.stop())


@pytest.fixture
def fake(fake_server: FakeGemini) -> FakeGemini:
    fake_server.reset()
    fake_server.allow(*KEYS)
    return fake_server


def keyloom_env(fake: FakeGemini, data_dir: Path, **overrides: Any) -> dict[str, str]:
    env = {
        "GEMINI_API_KEYS": ",".join(KEYS),
        "GEMINI_BASE_URL": fake.base_url,
        "PASSWORD": PASSWORD,
        "HOST": "127.0.0.1",
        "DATA_DIR": str(data_dir),
        "ACCESS_LOG": "false",
        "MODELS_REFRESH_INTERVAL": "3600",
        "UPSTREAM_TIMEOUT": "10",
        "UPSTREAM_STREAM_IDLE_TIMEOUT": "10",
        # hajimi's client limits (30/min) would get in the way of tests that send many requests;
        # tests of the limits set them.
        "MAX_REQUESTS_PER_MINUTE": "0",
        "MAX_REQUESTS_PER_DAY_PER_IP": "0",
        "API_KEY_DAILY_LIMIT": "0",
        "FLUSH_INTERVAL": "0.2",
        # Tests of other things look at exact upstream bodies, count upstream calls for identical requests
        # and expect a hang-up to cancel the upstream call: the tests of these features turn them on.
        "RANDOM_STRING": "false",
        "INFLIGHT_SHARING": "false",
        "CACHE_EXPIRY_TIME": "0",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@pytest.fixture
def start_keyloom(loop_thread: LoopThread, fake: FakeGemini, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(clock: Any = None, data_dir: Path | None = None, env: dict[str, str] | None = None,
              **overrides: Any) -> Running:
        # one DATA_DIR per instance (a second Keyloom on one data directory is refused): the first gets tmp_path
        if data_dir is None:
            data_dir = tmp_path / f"keyloom-{len(started) + 1}" if started else tmp_path
        settings = Settings.from_env(keyloom_env(fake, data_dir, **overrides))

        async def boot() -> Keyloom:
            kl = Keyloom(settings, password=settings.PASSWORD, data_dir=data_dir, clock=clock,
                         env=env or {})
            await kl.start(port=0)
            await kl.catalog.refresh()  # joins the start-up refresh, so tests begin from a known state
            return kl

        kl = loop_thread.run(boot())
        running = Running(kl, f"http://127.0.0.1:{kl.port}", loop_thread)
        started.append(running)
        fake.requests.clear()
        return running

    yield start
    clean = []
    for r in started:  # every instance is stopped before any verdict, so none is left running
        if r._client is not None:
            r._client.close()
        clean.append(loop_thread.run(r.kl.stop(0)))
    assert all(clean), "a closing step overran or failed to end (see the log)"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real redis-server for a module's tests (tests/support/redis_server.py): a free loopback port, its own
    directory. Skips where redis-server is missing, except in CI, where that fails."""
    from tests.support.redis_server import RedisServer, require
    require()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def keyloom(start_keyloom: Callable[..., Running]) -> Running:
    return start_keyloom()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the page tests (imported here, not at the top: tests/support/browser.py skips the
    module that imports it where Chromium is missing)."""
    from tests.support.browser import launch

    yield from launch()


@pytest.fixture(autouse=True)
def _browser_watch(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses `browser` fails instead of hanging when a Playwright call never returns."""
    if "browser" not in request.fixturenames:
        yield
        return
    from tests.support.browser import watch_test

    yield from watch_test()


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Clients a test opened (tests/support/closing.py) are closed when it ends."""
    yield
    close_all()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
