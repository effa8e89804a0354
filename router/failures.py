"""A failed upstream attempt: its outcome, its message, and the retry hints in its response headers."""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson

from router.redact import redact

_DELAY = re.compile(r"\A(\d+(?:\.\d+)?)s\Z")


@dataclass(slots=True)
class UpstreamFailure:
    """One failed attempt: an HTTP status or a transport outcome name, plus what it told us."""

    outcome: int | str  # status code, or connect_error | timeout | reset | malformed
    message: str
    retry_after: float | None = None
    model_scoped: bool = False
    note: str | None = None  # an unusable retry hint the upstream sent (for a log line), redacted

    @property
    def status(self) -> int:
        if isinstance(self.outcome, int):
            return self.outcome
        return {"timeout": 504, "connect_error": 502, "reset": 502, "malformed": 502}.get(self.outcome, 502)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name) or headers.get(name.lower())


def _delay(name: str, value: str, seconds: float, problems: list[str] | None) -> float | None:
    """``seconds`` when it is a usable delay; a negative or non-finite one is noted and ignored."""
    if seconds >= 0 and math.isfinite(seconds):
        return seconds
    if seconds == math.inf and _DECIMAL.match(value):
        return HUGE_DELAY  # a plain number with too many digits for a float: huge, capped by max_cooldown
    _note(problems, name, value, "is negative" if seconds < 0 else "is not finite")
    return None


_DECIMAL = re.compile(r"\A\s*\+?\d+(?:\.\d*)?\s*\Z")
HUGE_DELAY = 1e18  # seconds; what an over-long number of seconds counts as before the policy caps it


def _note(problems: list[str] | None, name: str, value: str, why: str) -> None:
    if problems is not None:
        problems.append(f"{name} {value[:40]!r} {why}")


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None,
                        problems: list[str] | None = None) -> float | None:
    """``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date); None when neither is usable.

    A negative, non-finite or unparseable value counts as absent (the policy's default applies), and
    is described in ``problems`` when given. A date in the past means 0.
    """
    ms = _header(headers, "retry-after-ms")
    if ms:
        try:
            seconds = _delay("retry-after-ms", ms, float(ms) * 0.001, problems)
        except ValueError:
            _note(problems, "retry-after-ms", ms, "is not a number")
        else:
            if seconds is not None:
                return seconds
    ra = _header(headers, "Retry-After")
    if not ra:
        return None
    try:
        return _delay("Retry-After", ra, float(ra), problems)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError, OverflowError):
        _note(problems, "Retry-After", ra, "is neither a number nor an HTTP date")
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no stated offset
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def _retry_delay(details: list[Any], problems: list[str]) -> float | None:
    """Gemini's ``RetryInfo.retryDelay`` (``"12s"``, ``"1.5s"``) from an error's details."""
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("RetryInfo"):
            text = str(d.get("retryDelay", ""))
            m = _DELAY.match(text)
            if m:
                return _delay("retryDelay", m.group(1), float(m.group(1)), problems)
            _note(problems, "retryDelay", text, "is not a duration like '12s'")
    return None


def parse_failure(status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...] = ()
                  ) -> UpstreamFailure:
    """Read an upstream error response of any dialect: message, retry delay, quota scope."""
    message = f"upstream returned HTTP {status}"
    problems: list[str] = []
    retry_after = retry_after_seconds(headers, problems=problems)
    model_scoped = False
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, list) and doc:  # Gemini's non-SSE stream endpoint wraps errors in an array
        doc = doc[0]
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        details = err.get("details")
        if isinstance(details, list):
            if retry_after is None:
                retry_after = _retry_delay(details, problems)
            model_scoped = any(isinstance(d, dict) and str(d.get("@type", "")).endswith("QuotaFailure")
                               for d in details)
    elif isinstance(err, str) and err:
        message = err
    elif isinstance(doc, dict) and isinstance(doc.get("message"), str) and doc["message"]:
        message = doc["message"]
    # Redact before truncating so a secret cut in half cannot leak its first part.
    note = redact("; ".join(problems), secrets)[:300] if problems else None
    return UpstreamFailure(status, redact(message, secrets)[:1000], retry_after, model_scoped, note)

