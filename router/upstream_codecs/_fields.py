"""Fields of upstream stream events, read strictly: a missing or mistyped one is a malformed stream
(a ValueError naming the upstream, the event and the field; the relay ends the stream with an error)."""

from __future__ import annotations

from typing import Any


def int_field(payload: dict[str, Any], key: str, stream: str) -> int:
    """``payload[key]`` as an integer (not a bool); ``stream`` names the upstream in the error."""
    value = payload.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{stream}: event without an integer {key!r}")
    return value


def str_field(delta: dict[str, Any], key: str, stream: str) -> str:
    """``delta[key]`` as a string; the error names the delta's ``type`` when it has one."""
    value = delta.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{stream}: {delta.get('type') or 'delta'} without a string {key!r}")
    return value
