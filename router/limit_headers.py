"""The rate-limit headers of a response to a key with limits, in the API family's own names.

OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset as a Go duration
(``6ms``, ``1s``, ``1m0s``). Anthropic: ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``,
the reset as an RFC 3339 instant. Each shows the tightest of the key's and its team's limits (the
fewest remaining); a kind without a limit is left out.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import NamedTuple


class Window(NamedTuple):  # a tuple: made on every response to a key with limits
    """One kind's tightest limit: its value, what remains now, seconds until it is whole again."""

    limit: int
    remaining: int
    reset_s: float


class RateStatus(NamedTuple):
    requests: Window | None
    tokens: Window | None


def go_duration(seconds: float) -> str:
    """A duration as Go prints one (OpenAI's reset headers): ``0s``, ``6ms``, ``1.5s``, ``1m0s``, ``1h2m3s``."""
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def openai_headers(status: RateStatus) -> dict[str, str]:
    out: dict[str, str] = {}
    requests, tokens = status
    if requests is not None:
        out["x-ratelimit-limit-requests"] = str(requests.limit)
        out["x-ratelimit-remaining-requests"] = str(requests.remaining)
        out["x-ratelimit-reset-requests"] = go_duration(requests.reset_s)
    if tokens is not None:
        out["x-ratelimit-limit-tokens"] = str(tokens.limit)
        out["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        out["x-ratelimit-reset-tokens"] = go_duration(tokens.reset_s)
    return out


def anthropic_headers(status: RateStatus) -> dict[str, str]:
    out: dict[str, str] = {}
    now = time.time()
    for kind, window in (("requests", status.requests), ("tokens", status.tokens)):
        if window is not None:
            out[f"anthropic-ratelimit-{kind}-limit"] = str(window.limit)
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(window.remaining)
            at = datetime.fromtimestamp(int(now + window.reset_s + 0.999), UTC)  # whole seconds, not before
            out[f"anthropic-ratelimit-{kind}-reset"] = at.isoformat().replace("+00:00", "Z")
    return out
