"""Typed field readers for Gemini request bodies; private to the Gemini dialect.

Gemini's REST API is camelCase but accepts snake_case too (google-genai sends camelCase), so every
reader takes the camelCase key and falls back to its snake_case spelling. Each reader returns the
value (``None`` when absent or null) or raises :class:`BadRequest` naming the field's path.
"""

from __future__ import annotations

import re
from typing import Any

from router.canonical import JSON_INT_MAX
from router.dialects._json_types import type_name as type_name  # re-exported to the Gemini readers
from router.dialects._json_types import wrong as wrong  # re-exported to the Gemini readers
from router.errors import BadRequest

_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def snake(key: str) -> str:
    """``maxOutputTokens`` → ``max_output_tokens``."""
    return _CAMEL_HUMP.sub("_", key).lower()


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def get(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]`` or ``obj[snake(key)]``; ``None`` when neither is present."""
    value = obj.get(key)
    return obj.get(snake(key)) if value is None else value


def as_obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise wrong(path, "an object", value)
    return value


def as_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise wrong(path, "an array", value)
    return value


def opt_obj(obj: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any] | None:
    value = get(obj, key)
    return None if value is None else as_obj(value, join(prefix, key))


def opt_list(obj: dict[str, Any], key: str, prefix: str = "") -> list[Any] | None:
    value = get(obj, key)
    return None if value is None else as_list(value, join(prefix, key))


def opt_str(obj: dict[str, Any], key: str, prefix: str = "") -> str | None:
    value = get(obj, key)
    if value is not None and not isinstance(value, str):
        raise wrong(join(prefix, key), "a string", value)
    return value


def opt_bool(obj: dict[str, Any], key: str, prefix: str = "") -> bool | None:
    value = get(obj, key)
    if value is not None and not isinstance(value, bool):
        raise wrong(join(prefix, key), "a boolean", value)
    return value


def opt_int(obj: dict[str, Any], key: str, prefix: str = "", minimum: int | None = None) -> int | None:
    value = get(obj, key)
    if value is None:
        return None
    path = join(prefix, key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong(path, "an integer", value)
    if minimum is not None and value < minimum:
        raise BadRequest(f"{path}: must be >= {minimum}", param=path)
    if abs(value) > JSON_INT_MAX:
        raise BadRequest(f"{path}: must be at most {JSON_INT_MAX} in magnitude", param=path)
    return value


def opt_number(obj: dict[str, Any], key: str, prefix: str = "") -> float | None:
    value = get(obj, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong(join(prefix, key), "a number", value)
    return value


def str_list(obj: dict[str, Any], key: str, prefix: str = "") -> list[str] | None:
    values = opt_list(obj, key, prefix)
    if values is None:
        return None
    path = join(prefix, key)
    for k, item in enumerate(values):
        if not isinstance(item, str):
            raise wrong(f"{path}[{k}]", "a string", item)
    return values
