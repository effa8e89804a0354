"""Errors with a status and a family-neutral kind; each API family renders them in its own shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

# kind -> default HTTP status. API families map a kind to their own error type names.
ERROR_KINDS: dict[str, int] = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,  # the client's own request body did not arrive in time
    "request_too_large": 413,
    "rate_limit": 429,
    "quota": 429,  # a client key's or team's budget is used up (OpenAI: insufficient_quota), until its period turns
    "server": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "timeout": 504,
    "overloaded": 529,
}


def kind_for_status(status: int) -> str:
    """The error kind an upstream HTTP status maps to."""
    if status == 408:  # an upstream that timed out waiting for us: a timeout, not the client's doing
        return "timeout"
    for kind, st in ERROR_KINDS.items():
        if st == status:
            return kind
    if 400 <= status < 500:
        return "invalid_request"
    return "server"


@dataclass(frozen=True)
class ConfigError:
    """One located config problem: file:line:column, JSON pointer and a plain message."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    pointer: str
    message: str

    def __str__(self) -> str:
        loc = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        ptr = f" at {self.pointer}" if self.pointer else ""
        return f"{loc}:{ptr} {self.message}" if ptr else f"{loc}: {self.message}"

    def as_dict(self) -> dict[str, str | int]:
        """The machine-readable form (``router check --format json``, ``/admin/config``)."""
        return {"file": self.file, "line": self.line, "column": self.column, "pointer": self.pointer,
                "message": self.message, "text": str(self)}


class ConfigErrors(Exception):
    """Raised by the loader with every problem found, not only the first."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


MAX_RETRY_AFTER = 86_400  # a day; retry hints are capped long before (retry policies' max_cooldown)


def client_retry_after(seconds: float) -> int:
    """What a client is told to wait (``Retry-After``, Gemini ``retryDelay``): whole seconds, rounded
    up, from 1 to a day, whatever the float (a non-finite one too): never a 300-digit header."""
    if not seconds < MAX_RETRY_AFTER:  # also NaN and infinity
        return MAX_RETRY_AFTER
    return max(1, math.ceil(seconds))


class GatewayError(Exception):
    """An error answered to the client in its API family's shape.

    ``kind`` is one of ERROR_KINDS; ``param`` names the offending request field when there is one;
    ``code`` is an optional machine code (``model_not_found``, ``invalid_api_key``...);
    ``retry_after`` (seconds) becomes a Retry-After header.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status if status is not None else ERROR_KINDS.get(kind, 500)
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.headers = headers or {}


class BadRequest(GatewayError):
    """A malformed client request; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__("invalid_request", message, param=param, code=code)
