"""Clients a test opens are closed when the test ends, however it ended: warnings are errors, and a socket the
garbage collector finds unclosed would fail whichever test happens to be running then."""
from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")
OPEN: list[Any] = []


def track(client: T) -> T:
    """Register anything with a close() (httpx, openai, anthropic clients, AdminClient)."""
    OPEN.append(client)
    return client


def close_all() -> None:
    while OPEN:
        OPEN.pop().close()
