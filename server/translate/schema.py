"""JSON Schema (what OpenAI clients send) → the OpenAPI subset Gemini's `Schema` accepts.

Gemini rejects keys such as `$schema` and `additionalProperties`, has no `$ref`,
no type arrays and no `const`, and refuses an OBJECT with empty `properties`.
This rewrites a schema into what it accepts while keeping its meaning as far as
the subset allows: references are inlined, `["string","null"]` becomes
`nullable`, `oneOf` becomes `anyOf`, `allOf` is merged.
"""
from __future__ import annotations

from typing import Any

ALLOWED_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "items", "maxItems", "minItems",
    "properties", "required", "minProperties", "maxProperties", "minimum", "maximum", "minLength",
    "maxLength", "pattern", "example", "anyOf", "propertyOrdering", "default",
})
_FORMATS = {"string": {"enum", "date-time"}, "number": {"float", "double"}, "integer": {"int32", "int64"}}
_MAX_REF_DEPTH = 8


def to_gemini_schema(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": s for name, s in schema[key].items()})
    return _clean(schema, defs, 0)


def _resolve(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> tuple[dict[str, Any], int]:
    while isinstance(schema.get("$ref"), str):
        target = defs.get(schema["$ref"])
        if not isinstance(target, dict) or depth >= _MAX_REF_DEPTH:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return rest or {"type": "object"}, depth
        merged = dict(target)
        merged.update({k: v for k, v in schema.items() if k != "$ref"})
        schema = merged
        depth += 1
    return schema, depth


def _merge_all_of(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema.get("allOf") or ():
        if not isinstance(sub, dict):
            continue
        sub, _ = _resolve(sub, defs, depth)
        for k, v in sub.items():
            if k == "properties" and isinstance(v, dict):
                merged.setdefault("properties", {})
                merged["properties"] = {**merged["properties"], **v}
            elif k == "required" and isinstance(v, list):
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *v]))
            else:
                merged.setdefault(k, v)
    return merged


def _clean(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    schema, depth = _resolve(schema, defs, depth)
    if "allOf" in schema:
        schema = _merge_all_of(schema, defs, depth)
    out: dict[str, Any] = {}
    nullable = bool(schema.get("nullable"))

    t = schema.get("type")
    types: list[str] = []
    if isinstance(t, str):
        types = [t]
    elif isinstance(t, list):
        types = [x for x in t if isinstance(x, str)]
    if "null" in types:
        nullable = True
        types = [x for x in types if x != "null"]

    variants = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(variants, list):
        kept = []
        for v in variants:
            if isinstance(v, dict) and v.get("type") == "null":
                nullable = True
                continue
            if isinstance(v, dict):
                kept.append(_clean(v, defs, depth))
        if len(kept) == 1 and not types:
            out.update(kept[0])
        elif kept:
            out["anyOf"] = kept

    if len(types) == 1:
        out["type"] = types[0]
    elif len(types) > 1 and "anyOf" not in out:
        out["anyOf"] = [{"type": x} for x in types]
    elif not types and "type" not in out and isinstance(schema.get("properties"), dict):
        out["type"] = "object"

    if "const" in schema and "enum" not in schema:
        schema = {**schema, "enum": [schema["const"]]}
    for key, value in schema.items():
        if key not in ALLOWED_KEYS or key in ("type", "anyOf", "nullable"):
            continue
        if key == "properties":
            if isinstance(value, dict):
                props = {name: _clean(sub, defs, depth) for name, sub in value.items() if isinstance(sub, dict)}
                if props:
                    out["properties"] = props
        elif key == "items":
            if isinstance(value, list):
                value = value[0] if value else {}
            if isinstance(value, dict):
                out["items"] = _clean(value, defs, depth)
        elif key == "enum":
            if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
                out["enum"] = value
                out.setdefault("type", "string")
        elif key == "format":
            base = str(out.get("type", "")).lower()
            if value in _FORMATS.get(base, ()):
                out["format"] = value
        elif key == "required":
            if isinstance(value, list):
                out["required"] = [x for x in value if isinstance(x, str)]
        elif key == "propertyOrdering":
            if isinstance(value, list):
                out["propertyOrdering"] = value
        else:
            out[key] = value
    if "required" in out:
        names = set(out.get("properties", {}))
        out["required"] = [x for x in out["required"] if x in names]
        if not out["required"]:
            del out["required"]
    if "propertyOrdering" in out:
        names = set(out.get("properties", {}))
        out["propertyOrdering"] = [x for x in out["propertyOrdering"] if x in names]
        if not out["propertyOrdering"]:
            del out["propertyOrdering"]
    if nullable:
        out["nullable"] = True
    return out


def is_empty_object(schema: dict[str, Any]) -> bool:
    """An object schema with no properties: Gemini refuses it as function parameters."""
    return not schema or (str(schema.get("type", "object")).lower() == "object" and not schema.get("properties")
                          and "anyOf" not in schema)
