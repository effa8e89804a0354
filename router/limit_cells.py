"""The per-request arithmetic of the limit cells in this process, on the tuples a bound plan holds
(``router.limits.Bound``): GCRA for rpm and tpm, a count for concurrency.

This module is the reference and the fallback. ``router/_speedups.c`` has the same functions
compiled, with the same results to the last bit (tests/test_speedups.py checks both on random
sequences); ``CELLS`` is the one the limiter uses (``router.speedups``: the compiled one when it
was built, unless ``ROUTER_NO_EXTENSIONS`` is set).

The tuples, each built once per plan:

* a rate cell: ``(counter, seconds per unit, whether rpm, the limit, the cell)``;
* a concurrency cell: ``(counter, the limit, the cell)``;
* a tpm cell (the corrections): ``(counter, seconds per unit)``.

``over(cell, wait)`` is the caller's 429 for a cell and how long until the request fits; it is
raised as returned. A cell holds ``burst * interval`` = ``PERIOD_S`` seconds, so the cell that waits
longest is the one with the latest TAT.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from router import speedups
from router.limit_headers import Span, Status

PERIOD_S = 60.0  # rpm and tpm: per minute

Over = Callable[[Any, float], BaseException]


class Counter:
    """One cell's counters in this process: its GCRA theoretical arrival time (rpm, tpm) or its
    requests in flight (concurrency). Shared by every plan that holds the cell."""

    __slots__ = ("inflight", "tat")

    def __init__(self) -> None:
        self.tat = 0.0
        self.inflight = 0


Rates = tuple[tuple[Any, float, bool, int, Any], ...]
Slots = tuple[tuple[Any, int, Any], ...]
Tpm = tuple[tuple[Any, float], ...]


def admit(slots: Slots, rates: Rates, tokens: int, now: float, over: Over) -> Status:
    """Every cell or none: the slots checked, the rates taken (all or none), then the slots taken, so
    a 429 has nothing to give back. The tightest windows after it (the headers)."""
    for counter, limit, cell in slots:
        if counter.inflight >= limit:
            raise over(cell, 1.0)
    status = take(rates, tokens, now, over)
    for counter, _, _ in slots:
        counter.inflight += 1
    return status


def take(rates: Rates, tokens: int, now: float, over: Over) -> Status:
    """Reserve rpm (1) and tpm (``tokens``, at most the limit), all or none: one pass, committed at
    once and undone on a 429 (a TAT that was in the past comes back as now: the same to GCRA)."""
    latest, worst = now, None
    requests: Span | None = None
    spent: Span | None = None
    for counter, interval, rpm, limit, cell in rates:
        tat = counter.tat
        if tat < now:
            tat = now
        tat += interval if rpm or tokens <= 1 else (tokens if tokens <= limit else limit) * interval
        counter.tat = tat
        used = tat - now
        if used > PERIOD_S:  # over: it fits again once its TAT is a period away
            if tat > latest:
                latest, worst = tat, cell
            continue
        remaining = int((PERIOD_S - used) / interval)  # int() floors what is not negative
        if rpm:
            if requests is None or remaining < requests[1]:
                requests = (limit, remaining, used)
        elif spent is None or remaining < spent[1]:
            spent = (limit, remaining, used)
    if worst is not None:
        for counter, interval, rpm, limit, _ in rates:
            counter.tat -= interval if rpm or tokens <= 1 else (tokens if tokens <= limit else limit) * interval
        raise over(worst, latest - PERIOD_S - now)
    return requests, spent


def release(slots: Slots) -> None:
    """Free one slot of each concurrency cell (never below zero)."""
    for counter, _, _ in slots:
        if counter.inflight > 0:
            counter.inflight -= 1


def adjust(tpm: Tpm, delta: int, now: float) -> None:
    """Correct each tpm cell by ``delta`` tokens: charged even past the burst (they were spent),
    given back never below now."""
    for counter, interval in tpm:
        tat = counter.tat
        if tat < now:
            tat = now
        tat += delta * interval
        counter.tat = tat if tat > now else now


def settle(slots: Slots, tpm: Tpm, delta: int, now: float) -> None:
    """A response ended: ``release`` its slots, then ``adjust`` the tpm cells by ``delta`` (not 0)."""
    release(slots)
    if delta:
        adjust(tpm, delta, now)


PYTHON: ModuleType = sys.modules[__name__]  # this module: the reference
CELLS: ModuleType = speedups.compiled() or PYTHON  # what the limiter uses
