"""Testing keys against the upstream, as a job the page can follow.

A test asks Google for one page of the model list with the key: it tells a working key from an
invalid or suspended one without spending generation quota. (A Vertex service account is tested by
getting a fresh token, an express key by counting tokens, an OpenAI-compatible key by listing models.)
A key Google refuses is taken out of rotation exactly as a failed request would; a working disabled key is
only reported (the owner decides to re-enable it).
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..pool.keys import Key, KeyPool
from ..pool.policy import KeyEffect, verdict
from ..upstream.failures import UpstreamFailure

PARALLEL = 4
KEEP_JOBS = 20


@dataclass
class TestJob:
    id: str
    keys: list[Key]
    started: float
    results: list[dict[str, Any]] = field(default_factory=list)
    finished: float | None = None
    actor: Any = None

    def view(self) -> dict[str, Any]:
        ok = sum(1 for r in self.results if r["ok"])
        return {"id": self.id, "total": len(self.keys), "done": len(self.results), "ok": ok,
                "failed": len(self.results) - ok, "finished": self.finished is not None,
                "results": self.results}


class KeyTests:
    def __init__(self, pool: KeyPool, client_for: Callable[[Key], Any], redact: Callable[[str], str]):
        """`client_for(key)`: the upstream client of the key's provider (each has `check_key`)."""
        self.pool = pool
        self.client_for = client_for
        self.redact = redact
        self.jobs: dict[str, TestJob] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.on_done: Callable[[TestJob], Any] | None = None

    def start(self, keys: list[Key], actor: Any = None) -> TestJob:
        job = TestJob(f"t{next(self._ids)}", keys, time.time(), actor=actor)
        self.jobs[job.id] = job
        while len(self.jobs) > KEEP_JOBS:
            self.jobs.pop(next(iter(self.jobs)))
        task = asyncio.ensure_future(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _one(self, key: Key) -> dict[str, Any]:
        t0 = time.monotonic()
        try:
            await self.client_for(key).check_key(key.secret)
        except UpstreamFailure as f:
            message = self.redact(" ".join(f.message.split()))
            self.pool.learn(key, "", f)  # the project its error names (pool/learned.py)
            disabled = False
            if verdict(f).key is KeyEffect.DISABLE:
                disabled = key.disabled_reason is None
                self.pool.disable(key, f"{f.kind}: {message}")
            self.pool.note_error(key, f"{f.kind}: {message}")
            return {"fp": key.fp, "key": key.masked, "ok": False, "kind": f.kind, "message": message,
                    "disabled": disabled, "ms": round(1000 * (time.monotonic() - t0))}
        return {"fp": key.fp, "key": key.masked, "ok": True, "kind": None, "message": None,
                "disabled": key.disabled_reason is not None, "ms": round(1000 * (time.monotonic() - t0))}

    async def _run(self, job: TestJob) -> None:
        gate = asyncio.Semaphore(PARALLEL)

        async def run(key: Key) -> None:
            async with gate:
                try:
                    job.results.append(await self._one(key))
                except Exception as e:  # never leave a job hanging
                    job.results.append({"fp": key.fp, "key": key.masked, "ok": False, "kind": type(e).__name__,
                                        "message": self.redact(str(e)), "disabled": False, "ms": 0})

        await asyncio.gather(*(run(k) for k in job.keys))
        job.finished = time.time()
        if self.on_done is not None:
            await self.on_done(job)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
