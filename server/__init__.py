"""Keyloom: one OpenAI-compatible endpoint in front of a pool of Gemini keys."""

__version__ = "0.1.0"
