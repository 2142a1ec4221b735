"""A signed-in dashboard client for tests: httpx with the session cookie and the CSRF token."""
from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.closing import track


class AdminClient:
    def __init__(self, base_url: str, password: str, *, base: str = "", headers: dict[str, str] | None = None):
        self.http = httpx.Client(base_url=base_url, timeout=20.0, headers=headers or {})
        track(self)
        self.api = base + "/api/"
        r = self.http.post(self.api + "login", json={"password": password})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf"]
        self.login_response = r

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(self.api + path, **kw)

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, self.api + path, json=body if body is not None else {},
                                 headers={"X-CSRF-Token": self.csrf})

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        r = self.get(path) if method == "GET" else self.call(method, path, body)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def test_keys(self, fps: list[str] | None = None, timeout: float = 10.0) -> Any:
        """Start a key test (all keys, or these fingerprints) and follow it to the end → the finished job."""
        job = self.ok("POST", "keys/test", {} if fps is None else {"keys": fps})
        deadline = time.monotonic() + timeout
        while not job["finished"]:
            assert time.monotonic() < deadline, f"key test {job['id']} did not finish: {job}"
            time.sleep(0.02)
            job = self.ok("GET", f"jobs/{job['id']}")
        return job

    def close(self) -> None:
        self.http.close()

