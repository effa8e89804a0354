"""JSON Schema → the OpenAPI-subset ``Schema`` Gemini accepts in ``functionDeclarations[].parameters``.

Gemini rejects most of JSON Schema with a 400 (``$schema``, ``additionalProperties``, ``$ref``,
``const``, type unions, non-string enums, formats other than a few). The clean-up keeps only the
keys Gemini documents and rewrites the common idioms instead of dropping their meaning:

- ``$ref`` to ``#/$defs/X`` or ``#/definitions/X`` is inlined (at most ``MAX_REF_DEPTH`` nested
  refs, so recursive models terminate); an unresolvable or too-deep ref becomes ``{"type": "object"}``.
- ``type: [X, "null"]`` → ``type: X, nullable: true``; several non-null types → ``anyOf``.
- ``anyOf``/``oneOf`` with a ``{"type": "null"}`` member → the other members + ``nullable``; a single
  remaining member is merged into the parent. ``allOf`` members are merged into the parent.
- ``const: v`` → ``enum: [v]``; enum values become strings (Gemini enums are string-only), so an
  enum schema is typed ``string``.
- ``required`` keeps only names present in ``properties``; ``format`` is kept only where Gemini
  supports it; an array without ``items`` gets string items (Gemini requires ``items``).
"""

from __future__ import annotations

from typing import Any

MAX_REF_DEPTH = 8
MAX_DEPTH = 64

# Keys copied through unchanged (scalars); structural keys are handled one by one below.
_SCALAR_KEYS = (
    "description",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "propertyOrdering",
)
_FORMATS = {
    "string": {"enum", "date-time"},
    "number": {"float", "double"},
    "integer": {"int32", "int64"},
}
_FALLBACK: dict[str, Any] = {"type": "object"}


def gemini_schema(schema: Any) -> dict[str, Any] | None:
    """Clean a JSON Schema for Gemini's ``parameters`` field; ``None`` stays ``None``."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        return {}
    return _Cleaner(schema).clean(schema, 0, 0)


class _Cleaner:
    """Holds the root schema so ``$ref`` can be resolved against its ``$defs``/``definitions``."""

    def __init__(self, root: dict[str, Any]):
        self.root = root

    def clean(self, schema: Any, depth: int, refs: int) -> dict[str, Any]:
        if not isinstance(schema, dict):
            return {}
        if depth > MAX_DEPTH:
            return dict(_FALLBACK)
        if "$ref" in schema:
            target = self._resolve(schema["$ref"]) if refs < MAX_REF_DEPTH else None
            if target is None:
                return dict(_FALLBACK)
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            return self.clean(merged, depth + 1, refs + 1)
        out = self._own_keys(schema, depth, refs)
        members = schema.get("allOf")
        for member in members if isinstance(members, list) else ():
            _merge(out, self.clean(member, depth + 1, refs))
        return _finish(out)

    def _resolve(self, ref: Any) -> dict[str, Any] | None:
        if not isinstance(ref, str):
            return None
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                defs = self.root.get(prefix[2:-1])
                target = defs.get(ref[len(prefix) :]) if isinstance(defs, dict) else None
                return target if isinstance(target, dict) else None
        if ref == "#":
            return self.root
        return None

    def _own_keys(self, schema: dict[str, Any], depth: int, refs: int) -> dict[str, Any]:
        out: dict[str, Any] = {k: schema[k] for k in _SCALAR_KEYS if k in schema}
        _apply_type(out, schema.get("type"))
        if schema.get("nullable") is True:
            out["nullable"] = True
        if "const" in schema:
            out["enum"] = [schema["const"]]
        elif isinstance(schema.get("enum"), list):
            out["enum"] = list(schema["enum"])
        if isinstance(schema.get("format"), str):
            out["format"] = schema["format"]
        props = schema.get("properties")
        if isinstance(props, dict):
            out["properties"] = {
                str(name): self.clean(sub, depth + 1, refs) for name, sub in props.items()
            }
        if isinstance(schema.get("required"), list):
            out["required"] = [r for r in schema["required"] if isinstance(r, str)]
        items = schema.get("items")
        if isinstance(items, list):
            items = items[0] if items else None
        if isinstance(items, dict):
            out["items"] = self.clean(items, depth + 1, refs)
        union = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(union, list):
            _apply_union(out, [self.clean(m, depth + 1, refs) for m in union])
        return out


def _apply_type(out: dict[str, Any], type_: Any) -> None:
    if isinstance(type_, str):
        if type_ == "null":
            out["nullable"] = True
        else:
            out["type"] = type_
        return
    if not isinstance(type_, list):
        return
    types = [t for t in type_ if isinstance(t, str) and t != "null"]
    if len(types) != len(type_):
        out["nullable"] = True
    if len(types) == 1:
        out["type"] = types[0]
    elif types:
        out["anyOf"] = [{"type": t} for t in types]


def _apply_union(out: dict[str, Any], members: list[dict[str, Any]]) -> None:
    """``anyOf`` without its null members; one remaining member is folded into the parent."""
    kept = [m for m in members if m != {"nullable": True}]
    if len(kept) != len(members):
        out["nullable"] = True
    if len(kept) == 1:
        _merge(out, kept[0])
    elif kept:
        out["anyOf"] = kept


def _merge(out: dict[str, Any], extra: dict[str, Any]) -> None:
    """Fold ``extra`` into ``out``: properties and required lists union, other keys fill gaps."""
    for key, value in extra.items():
        if key == "properties" and isinstance(out.get(key), dict):
            out[key] = {**value, **out[key]}
        elif key == "required" and isinstance(out.get(key), list):
            out[key] = out[key] + [r for r in value if r not in out[key]]
        elif key not in out:
            out[key] = value


def _finish(out: dict[str, Any]) -> dict[str, Any]:
    """Rules that need the whole (merged) schema: enums, formats, required, array items."""
    if "enum" in out:
        values = out["enum"]
        if None in values:
            out["nullable"] = True
        out["enum"] = [v if isinstance(v, str) else _enum_str(v) for v in values if v is not None]
        out["type"] = "string"
        out.pop("format", None)
    fmt = out.get("format")
    if fmt is not None and fmt not in _FORMATS.get(out.get("type", ""), ()):
        del out["format"]
    if "required" in out:
        props = out.get("properties") or {}
        required = [r for r in dict.fromkeys(out["required"]) if r in props]
        if required:
            out["required"] = required
        else:
            del out["required"]
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {"type": "string"}
    return out


def _enum_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
