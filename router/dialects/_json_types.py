"""Shared by the dialects' field readers: JSON type names and the wrong-type error."""

from __future__ import annotations

from typing import Any

from router.errors import BadRequest


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def wrong(path: str, expected: str, value: Any) -> BadRequest:
    """``path: expected X, got Y`` as a BadRequest naming the field."""
    return BadRequest(f"{path}: expected {expected}, got {type_name(value)}", param=path)
