"""Validate our responses against the official OpenAI OpenAPI spec (tests/data/openai-openapi.yaml).

The spec says OpenAPI 3.1 but marks nullable fields the 3.0 way (`nullable: true`);
those are rewritten to JSON Schema (`type: [X, "null"]`) before validation.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC = Path(__file__).resolve().parent.parent / "data" / "openai-openapi.yaml"


def _nullable_to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_json_schema(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        elif isinstance(t, list):
            if "null" not in t:
                out["type"] = [*t, "null"]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def components() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(SPEC, encoding="utf-8") as f:
        spec = yaml.load(f, Loader=loader)
    return _nullable_to_json_schema(spec["components"])


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": components()}
    return jsonschema.Draft202012Validator(schema)


def validate(name: str, instance: Any) -> None:
    """Raise jsonschema.ValidationError when `instance` does not match schema `name`."""
    validator(name).validate(instance)
