"""The rate-limit headers of a response to a key with limits, in the API family's own names.

OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset as a Go duration
(``6ms``, ``1s``, ``1m0s``). Anthropic: ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``,
the reset as an RFC 3339 instant. Each shows the tightest of the key's and its team's limits (the
fewest remaining); a kind without a limit is left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from router import speedups


class Window(NamedTuple):
    """One kind's tightest limit: its value, what remains now, seconds until it is whole again."""

    limit: int
    remaining: int
    reset_s: float


class RateStatus(NamedTuple):
    requests: Window | None
    tokens: Window | None


# A Window and a RateStatus as the request path builds them: plain tuples (a NamedTuple costs ~3k
# instructions to make, a tuple ~0.1k; bench/instructions.py --auth limits), read by position.
Span = tuple[int, int, float]  # (limit, remaining, reset_s)
Status = tuple[Span | None, Span | None]  # (requests, tokens)


def rate_status(status: Status) -> RateStatus:
    """Plain request-path tuples as named windows (``/v1/usage``, ``Limiter.status``: not per response)."""
    requests, tokens = status
    return RateStatus(Window(*requests) if requests else None, Window(*tokens) if tokens else None)


def python_go_duration(seconds: float) -> str:
    """A duration as Go prints one (OpenAI's reset headers): ``0s``, ``6ms``, ``1.5s``, ``1m0s``, ``1h2m3s``."""
    ms = round(seconds * 1000)
    if ms < 1000:  # the usual case (a minute's limit frees a unit every 60/N s): kept short
        return f"{ms}ms" if ms > 0 else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") + "s" if frac else f"{whole}s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def python_openai_headers(status: Status) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of (requests, tokens): six, or the three of the one kind limited."""
    requests, tokens = status
    if requests is None or tokens is None:  # one kind limited
        return _openai_kind("requests", requests) if tokens is None else _openai_kind("tokens", tokens)
    limit, remaining, reset = requests
    t_limit, t_remaining, t_reset = tokens
    return {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": python_go_duration(reset),
            "x-ratelimit-limit-tokens": str(t_limit), "x-ratelimit-remaining-tokens": str(t_remaining),
            "x-ratelimit-reset-tokens": python_go_duration(t_reset)}


def _openai_kind(kind: str, window: Span | None) -> dict[str, str]:
    if window is None:
        return {}
    limit, remaining, reset = window
    return {f"x-ratelimit-limit-{kind}": str(limit), f"x-ratelimit-remaining-{kind}": str(remaining),
            f"x-ratelimit-reset-{kind}": python_go_duration(reset)}


_COMPILED = speedups.compiled()  # the same two functions in C (router/_speedups.c), when built
go_duration: Callable[[float], str] = _COMPILED.go_duration if _COMPILED else python_go_duration
openai_headers: Callable[[Status], dict[str, str]] = _COMPILED.openai_headers if _COMPILED else python_openai_headers


# Anthropic's header names per kind: (limit, remaining, reset)
ANTHROPIC_NAMES = tuple(tuple(f"anthropic-ratelimit-{kind}-{what}" for what in ("limit", "remaining", "reset"))
                        for kind in ("requests", "tokens"))


def anthropic_headers(status: Status) -> dict[str, str]:
    out: dict[str, str] = {}
    now = time.time()
    for (limit_name, remaining_name, reset_name), window in zip(ANTHROPIC_NAMES, status):  # noqa: B905 - both pairs
        if window is not None:
            limit, remaining, reset = window
            out[limit_name] = str(limit)
            out[remaining_name] = str(remaining)
            # whole seconds, not before; gmtime + strftime: 29k instructions per response against 46k with datetime
            out[reset_name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(now + reset + 0.999)))
    return out
