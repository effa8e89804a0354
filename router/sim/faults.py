"""Scripted faults: what they are, how they are parsed, and the per-key queues they wait in."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

# "exception": a stream ends with its dialect's mid-stream error frame (Bedrock's exception message,
# its ``status`` choosing the type) after ``after_chunks`` content chunks; a dialect without one resets
FaultKind = Literal["status", "reset", "slow_first_byte", "malformed", "stall", "exception"]
KINDS: tuple[str, ...] = ("status", "reset", "slow_first_byte", "malformed", "stall", "exception")
ANY_KEY = "*"


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour, applied to ``times`` requests (-1: until cleared)."""

    kind: FaultKind
    status: int = 0
    retry_after: float | None = None
    retry_delay: str | None = None
    after_chunks: int = 0
    delay: float = 0.0
    times: int = 1
    message: str | None = None
    code: str | None = None  # an OpenAI-style error ``code`` (e.g. context_length_exceeded)


@dataclass(slots=True)
class _Pending:
    fault: Fault
    remaining: int


def parse_fault(spec: Any) -> Fault:
    """Build a ``Fault`` from its control-endpoint JSON; raises ``ValueError`` when malformed."""
    if not isinstance(spec, dict):
        raise ValueError("each fault must be a JSON object")
    kind = spec.get("kind", "status" if "status" in spec else None)
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
    status = spec.get("status", 0)
    if kind in ("status", "exception") and not (isinstance(status, int) and 400 <= status <= 599):
        raise ValueError(f"status fault needs an integer 'status' in 400..599, got {status!r}")
    times = _int(spec, "times", 1)
    if times == 0 or times < -1:
        raise ValueError("'times' must be a positive count or -1 (forever)")
    retry_delay = spec.get("retry_delay")
    if retry_delay is not None and not isinstance(retry_delay, str):
        raise ValueError("'retry_delay' must be a duration string such as \"2s\"")
    message = spec.get("message")
    code = spec.get("code")
    if code is not None and not isinstance(code, str):
        raise ValueError("'code' must be a string")
    return Fault(
        kind=kind, status=status if kind in ("status", "exception") else 0,
        retry_after=_number(spec, "retry_after"), retry_delay=retry_delay,
        after_chunks=max(0, _int(spec, "after_chunks", 0)),
        delay=_number(spec, "delay") or 0.0, times=times,
        message=message if isinstance(message, str) else None, code=code,
    )


def _int(spec: dict[str, Any], name: str, default: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name!r} must be an integer")
    return value


def _number(spec: dict[str, Any], name: str) -> float | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name!r} must be a non-negative number of seconds")
    return float(value)


class FaultBook:
    """Per-key fault queues; a request takes from its own key's queue, then from ``'*'``."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[_Pending]] = {}

    def add(self, key: str, faults: list[Fault]) -> None:
        queue = self._queues.setdefault(key, deque())
        queue.extend(_Pending(fault, fault.times) for fault in faults)

    def take(self, key: str) -> Fault | None:
        """The fault for the next request made with ``key``, consuming one of its uses."""
        return self._take_from(key) or self._take_from(ANY_KEY)

    def pending(self) -> dict[str, int]:
        """Queued fault entries per key (a forever-fault counts once)."""
        return {key: len(queue) for key, queue in self._queues.items() if queue}

    def clear(self) -> None:
        self._queues.clear()

    def _take_from(self, key: str) -> Fault | None:
        queue = self._queues.get(key)
        if not queue:
            return None
        head = queue[0]
        if head.remaining > 0:
            head.remaining -= 1
            if head.remaining == 0:
                queue.popleft()
        return head.fault
