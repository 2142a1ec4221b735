"""JSON Schema (what OpenAI clients send) → the OpenAPI subset Gemini's `Schema` accepts.

Gemini rejects keys such as `$schema` and `additionalProperties`, has no `$ref`,
no type arrays and no `const`, and refuses an OBJECT with empty `properties`.
This rewrites a schema into what it accepts while keeping its meaning as far as
the subset allows: references are inlined, `["string","null"]` becomes
`nullable`, `oneOf` becomes `anyOf`, `allOf` is merged.

Client schemas are untrusted, so the walk has limits of its own rather than Python's: a schema nested
deeper than `MAX_SCHEMA_DEPTH` levels (Gemini refuses deep schemas anyway) and one that inlining `$ref`
blows up past `MAX_SCHEMA_NODES` (k references per level, 8 levels: k**8 nodes, minutes of CPU on the
event loop) raise `SchemaError`, which the translator turns into a 400 naming the schema.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALLOWED_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "items", "maxItems", "minItems",
    "properties", "required", "minProperties", "maxProperties", "minimum", "maximum", "minLength",
    "maxLength", "pattern", "example", "anyOf", "propertyOrdering", "default",
})
_FORMATS = {"string": {"enum", "date-time"}, "number": {"float", "double"}, "integer": {"int32", "int64"}}
_MAX_REF_DEPTH = 8
MAX_SCHEMA_DEPTH = 64       # levels of nested schemas (properties, items, anyOf), the root being level 1
MAX_SCHEMA_NODES = 10_000   # schemas written out, $ref inlined, per budget (a request's tools share one)


class SchemaError(ValueError):
    """A schema Keyloom will not translate; the message completes "<where> …"."""


@dataclass
class Budget:
    """Schema nodes a request may still produce. Shared by all the schemas it holds (every tool's
    parameters), so that many small `$ref` bombs cannot add up to one big one."""

    nodes: int = MAX_SCHEMA_NODES

    def take(self) -> None:
        self.nodes -= 1
        if self.nodes < 0:
            raise SchemaError(f"takes the request past {MAX_SCHEMA_NODES} schema nodes ($ref inlined); "
                              "simplify its schemas")


@dataclass
class _Walk:
    defs: dict[str, Any]  # "#/$defs/name" → schema
    budget: Budget


def to_gemini_schema(schema: Any, budget: Budget | None = None) -> dict[str, Any]:
    """Raises SchemaError for a schema nested deeper than MAX_SCHEMA_DEPTH or over the node budget."""
    if not isinstance(schema, dict):
        return {}
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": s for name, s in schema[key].items()})
    return _clean(schema, _Walk(defs, budget if budget is not None else Budget()), 0, 1)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether a JSON value nests more than `limit` objects or arrays. Iterative: the value may be deeper
    than Python's recursion limit."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children)
    return False


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


def _merge_all_of(schema: dict[str, Any], walk: _Walk, refs: int, level: int) -> dict[str, Any]:
    """`allOf` folded into one schema; an `allOf` inside one of its parts is folded too, a level deeper."""
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema.get("allOf") or ():
        if not isinstance(sub, dict):
            continue
        walk.budget.take()
        sub, sub_refs = _resolve(sub, walk.defs, refs)
        if "allOf" in sub:
            _check_level(level + 1)
            sub = _merge_all_of(sub, walk, sub_refs, level + 1)
        for k, v in sub.items():
            if k == "properties" and isinstance(v, dict):
                mine = merged.get("properties")
                merged["properties"] = {**(mine if isinstance(mine, dict) else {}), **v}
            elif k == "required" and isinstance(v, list):
                mine = merged.get("required")
                names = [x for x in [*(mine if isinstance(mine, list) else []), *v] if isinstance(x, str)]
                merged["required"] = list(dict.fromkeys(names))
            else:
                merged.setdefault(k, v)
    return merged


def _check_level(level: int) -> None:
    if level > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"is nested deeper than {MAX_SCHEMA_DEPTH} levels, the most Keyloom sends to Gemini")


def _clean(schema: dict[str, Any], walk: _Walk, refs: int, level: int) -> dict[str, Any]:
    """`refs`: `$ref`s followed on the way here; `level`: how deep this schema sits (the root is 1)."""
    _check_level(level)
    walk.budget.take()
    schema, refs = _resolve(schema, walk.defs, refs)
    if "allOf" in schema:
        schema = _merge_all_of(schema, walk, refs, level)
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
                kept.append(_clean(v, walk, refs, level + 1))
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
                props = {name: _clean(sub, walk, refs, level + 1) for name, sub in value.items()
                         if isinstance(sub, dict)}
                if props:
                    out["properties"] = props
        elif key == "items":
            if isinstance(value, list):
                value = value[0] if value else {}
            if isinstance(value, dict):
                out["items"] = _clean(value, walk, refs, level + 1)
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
                out["propertyOrdering"] = [x for x in value if isinstance(x, str)]
        else:
            if _too_deep(value, MAX_SCHEMA_DEPTH):  # example, default…: copied as they are
                raise SchemaError(f"holds a value ({key}) nested deeper than {MAX_SCHEMA_DEPTH} levels")
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
