"""Named server-sent events (`event: <type>` then `data: {…}`), as the Responses and Messages APIs send them."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def named_events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The data of each event, checked against its name (`ping` and keep-alive comments included as sent)."""
    out: list[dict[str, Any]] = []
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["type"] == name, (name, data)
            out.append(data)
    return out


def stream_named(kl: Any, path: str, body: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    """POST `body` with stream on to a running Keyloom; → its named events (the answer must be a 200 stream)."""
    with kl.http() as h, h.stream("POST", path, headers=headers, json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return named_events(r.iter_lines())
