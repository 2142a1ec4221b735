"""Upstreams beyond the Gemini API: Vertex AI and OpenAI-compatible servers, and the router that
sends each model id to the provider that owns it."""
