"""Typed field readers for Anthropic request bodies: each returns the value or raises BadRequest.

Private to the Anthropic dialect (the leading underscore keeps dialect discovery off it). Every
reader takes the field's dotted path so the error names exactly what was wrong.
"""

from __future__ import annotations

from typing import Any

from router.canonical import JSON_INT_MAX
from router.dialects._json_types import type_name as type_name  # re-exported to the Anthropic readers
from router.dialects._json_types import wrong as _wrong
from router.errors import BadRequest


def _get(obj: dict[str, Any], key: str, path: str, required: bool) -> Any:
    value = obj.get(key)
    if value is None and required:
        raise BadRequest(f"{path}: field required", param=path)
    return value


def obj(value: Any, path: str) -> dict[str, Any]:
    """``value`` itself, which must be a JSON object."""
    if not isinstance(value, dict):
        raise _wrong(path, "an object", value)
    return value


def opt_str(o: dict[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    value = _get(o, key, path, required)
    if value is not None and not isinstance(value, str):
        raise _wrong(path, "a string", value)
    return value


def req_str(o: dict[str, Any], key: str, path: str) -> str:
    value = _get(o, key, path, True)
    if not isinstance(value, str):
        raise _wrong(path, "a string", value)
    return value


def opt_int(o: dict[str, Any], key: str, path: str, *, required: bool = False,
            minimum: int | None = None) -> int | None:
    value = _get(o, key, path, required)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(path, "an integer", value)
    if minimum is not None and value < minimum:
        raise BadRequest(f"{path}: must be >= {minimum}", param=path)
    if abs(value) > JSON_INT_MAX:
        raise BadRequest(f"{path}: must be at most {JSON_INT_MAX} in magnitude", param=path)
    return value


def opt_num(o: dict[str, Any], key: str, path: str) -> float | None:
    value = _get(o, key, path, False)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong(path, "a number", value)
    return float(value)


def opt_bool(o: dict[str, Any], key: str, path: str) -> bool | None:
    value = _get(o, key, path, False)
    if value is not None and not isinstance(value, bool):
        raise _wrong(path, "a boolean", value)
    return value


def opt_obj(o: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    value = o.get(key)
    return None if value is None else obj(value, path)


def req_obj(o: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    return obj(_get(o, key, path, True), path)


def req_list(o: dict[str, Any], key: str, path: str) -> list[Any]:
    value = _get(o, key, path, True)
    if not isinstance(value, list):
        raise _wrong(path, "an array", value)
    return value


def opt_list(o: dict[str, Any], key: str, path: str) -> list[Any] | None:
    value = o.get(key)
    if value is not None and not isinstance(value, list):
        raise _wrong(path, "an array", value)
    return value


def str_list(o: dict[str, Any], key: str, path: str) -> list[str] | None:
    items = opt_list(o, key, path)
    if items is None:
        return None
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _wrong(f"{path}.{i}", "a string", item)
    return items
