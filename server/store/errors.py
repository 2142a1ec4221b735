"""Failures of the storage layer that callers treat alike whichever store is in use."""
from __future__ import annotations


class StoreDown(Exception):
    """The store cannot be reached; it said so once itself. What was to be written waits for the next tick."""
