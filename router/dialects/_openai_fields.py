"""Typed readers for OpenAI request-body fields (shared by the chat and legacy completions dialects).

Not a dialect itself (no ``NAME``). Each reader treats ``null`` as absent and raises only
:class:`BadRequest` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.canonical import JSON_INT_MAX
from router.errors import BadRequest


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", param=None)
    return body


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    return model


def opt_number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"'{key}' must be a number", param=key)
    if not low <= value <= high:
        raise BadRequest(f"'{key}' must be between {low:g} and {high:g}", param=key)
    return float(value)


def opt_int(body: Mapping[str, Any], key: str, minimum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{key}' must be an integer", param=key)
    if minimum is not None and value < minimum:
        raise BadRequest(f"'{key}' must be at least {minimum}", param=key)
    if abs(value) > JSON_INT_MAX:
        raise BadRequest(f"'{key}' must be at most {JSON_INT_MAX} in magnitude", param=key)
    return value


def opt_bool(body: Mapping[str, Any], key: str, param: str | None = None) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise BadRequest(f"'{key}' must be a boolean", param=param or key)


def opt_str(body: Mapping[str, Any], key: str, param: str | None = None) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"'{key}' must be a string", param=param or key)


def opt_dict(body: Mapping[str, Any], key: str, param: str | None = None) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise BadRequest(f"'{key}' must be an object", param=param or key)


def _stop(body: Mapping[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop or None
    raise BadRequest("'stop' must be a string or an array of strings", param="stop")


def common_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling/stream fields chat and legacy completions share, as CanonicalRequest kwargs."""
    # A reader runs only for a field that is present (most requests carry two or three of these).
    options = (opt_dict(body, "stream_options") or {}) if "stream_options" in body else {}
    return {
        "temperature": opt_number(body, "temperature", 0.0, 2.0) if "temperature" in body else None,
        "top_p": opt_number(body, "top_p", 0.0, 1.0) if "top_p" in body else None,
        "stop": _stop(body) if "stop" in body else None,
        "n": opt_int(body, "n", 1) if "n" in body else None,
        "seed": opt_int(body, "seed") if "seed" in body else None,
        "user": opt_str(body, "user") if "user" in body else None,
        "metadata": opt_dict(body, "metadata") if "metadata" in body else None,
        "stream": bool(opt_bool(body, "stream")) if "stream" in body else False,
        "include_usage": bool(opt_bool(options, "include_usage", "stream_options.include_usage"))
        if options else False,
    }
