"""A failed upstream attempt: its outcome, its message, and its retry hints.

What is generic lives here (the status, ``Retry-After`` and ``retry-after-ms``, redaction, truncation);
what an error body means is each upstream codec's ``error_details`` (``router.upstream_codecs.<name>``).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson

from router.errors import GatewayError, kind_for_status
from router.redact import redact

# the outcome of an attempt that was never sent: the provider's circuit is open (router.circuit); a 503
CIRCUIT_OPEN = "circuit_open"


@dataclass(slots=True)
class UpstreamFailure:
    """One failed attempt: an HTTP status or a transport outcome name, plus what it told us."""

    outcome: int | str  # status code, or connect_error | timeout | reset | malformed | circuit_open
    message: str
    retry_after: float | None = None
    model_scoped: bool = False
    note: str | None = None  # an unusable retry hint the upstream sent (for a log line), redacted
    reason: str | None = None  # what its upstream codec read the error as: "context_length" or None

    @property
    def status(self) -> int:
        if isinstance(self.outcome, int):
            return self.outcome
        return {"timeout": 504, "connect_error": 502, "reset": 502, "malformed": 502,
                CIRCUIT_OPEN: 503}.get(self.outcome, 502)


class ProviderFailed(GatewayError):
    """A provider did not answer (the attempt loop's end): the client's error, plus the outcome that
    ended it for a fallback policy to read: an attempt's outcome (with its codec's ``reason``) or
    ``exhausted`` (no account could take the request)."""

    def __init__(self, outcome: int | str, kind: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None, reason: str | None = None, code: str | None = None):
        super().__init__(kind, message, status=status, retry_after=retry_after, code=code)
        self.outcome = outcome
        self.reason = reason

    @classmethod
    def of(cls, failure: UpstreamFailure) -> ProviderFailed:
        """The last failed attempt's error, as the client gets it when nothing else answers
        (``circuit_open``: a 503 with that code)."""
        status = failure.status
        return cls(failure.outcome, kind_for_status(status), failure.message, status=status,
                   retry_after=failure.retry_after, reason=failure.reason,
                   code=CIRCUIT_OPEN if failure.outcome == CIRCUIT_OPEN else None)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name) or headers.get(name.lower())


def usable_delay(name: str, value: str, seconds: float, problems: list[str] | None) -> float | None:
    """``seconds`` when it is a usable delay; a negative or non-finite one is noted and ignored."""
    if seconds >= 0 and math.isfinite(seconds):
        return seconds
    if seconds == math.inf and _DECIMAL.match(value):
        return HUGE_DELAY  # a plain number with too many digits for a float: huge, capped by max_cooldown
    note_problem(problems, name, value, "is negative" if seconds < 0 else "is not finite")
    return None


_DECIMAL = re.compile(r"\A\s*\+?\d+(?:\.\d*)?\s*\Z")
HUGE_DELAY = 1e18  # seconds; what an over-long number of seconds counts as before the policy caps it


def note_problem(problems: list[str] | None, name: str, value: str, why: str) -> None:
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
            seconds = usable_delay("retry-after-ms", ms, float(ms) * 0.001, problems)
        except ValueError:
            note_problem(problems, "retry-after-ms", ms, "is not a number")
        else:
            if seconds is not None:
                return seconds
    ra = _header(headers, "Retry-After")
    if not ra:
        return None
    try:
        return usable_delay("Retry-After", ra, float(ra), problems)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError, OverflowError):
        note_problem(problems, "Retry-After", ra, "is neither a number nor an HTTP date")
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no stated offset
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What an upstream's error body says, as its upstream codec reads it."""

    message: str | None = None  # None when the body names none
    retry_after: float | None = None  # the body's retry hint in seconds (a header's hint beats it)
    notes: tuple[str, ...] = ()  # unusable retry hints in the body, described (see ``note_problem``)
    model_scoped: bool = False  # the quota exhausted is the model's: another model may still have some
    reason: str | None = None  # CONTEXT_LENGTH when the body says the prompt is too long for the model


CONTEXT_LENGTH = "context_length"  # a reason: the request is too long for this model (another may take it)

# an upstream codec's reading of its error bodies: the parsed JSON (None when the body is not JSON)
ErrorReader = Callable[[Any], ErrorDetails]


def error_message(doc: Any) -> str | None:
    """The message where error bodies put it: ``{"error": {"message": ...}}``, ``{"error": "..."}``, or
    ``{"message": "..."}`` (only when there is no ``error`` object); None when empty or absent."""
    if not isinstance(doc, dict):
        return None
    err = doc.get("error")
    if isinstance(err, dict):
        message = err.get("message")
    elif isinstance(err, str) and err:
        message = err
    else:
        message = doc.get("message")
    return message if isinstance(message, str) and message else None


def parse_failure(read_error: ErrorReader, status: int, headers: Mapping[str, str], body: bytes,
                  secrets: tuple[str, ...] = ()) -> UpstreamFailure:
    """Read an upstream error response: the retry delay its headers give, and what ``read_error`` (its
    upstream codec's reader) finds in its body; every text redacted, then truncated."""
    problems: list[str] = []
    retry_after = retry_after_seconds(headers, problems=problems)
    details = read_error(_json(body))
    if retry_after is None:  # a header's hint beats the body's (whose problems then do not matter)
        retry_after = details.retry_after
        problems += details.notes
    message = details.message or f"upstream returned HTTP {status}"
    # Redact before truncating so a secret cut in half cannot leak its first part.
    note = redact("; ".join(problems), secrets)[:300] if problems else None
    return UpstreamFailure(status, redact(message, secrets)[:1000], retry_after, details.model_scoped, note,
                           details.reason)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
