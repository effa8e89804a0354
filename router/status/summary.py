"""The traffic numbers the status page shows, from one or more ``Traffic.export`` (one per worker).

Rows of the same second and (model, key, provider) are summed across exports; then per model, key and
provider: requests per second, errors, tokens, p50/p99 latency and p50 time to first byte over the
last ``WINDOW`` seconds, and a series of requests per ``SLOT`` seconds over the whole ring for the
charts. The totals get per-second request and error series and per-slot p50/p99 latency.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from router.status.traffic import BINS, BOUNDS, ERRORS, LATENCY, REQUESTS, SECONDS, TOKENS_IN, TOKENS_OUT, TTFB, WIDTH

WINDOW = 60  # seconds the table's numbers cover
SLOT = 10  # seconds per point of a model's, key's or provider's chart
DIMENSIONS = ("model", "key", "provider")

Combo = tuple[str, str, str]
Buckets = dict[int, dict[Combo, list[int]]]


def merge(exports: Iterable[dict[str, Any]], now: int) -> Buckets:
    """Every export's rows of the last ``SECONDS`` seconds, summed by second and combination."""
    out: Buckets = {}
    floor = now - SECONDS
    for export in exports:
        for second, rows in export.get("seconds", ()):
            if not floor < second <= now:
                continue
            bucket = out.setdefault(int(second), {})
            for model, key, provider, *row in rows:
                acc = bucket.setdefault((model, key, provider), [0] * WIDTH)
                for i, value in enumerate(row[:WIDTH]):
                    acc[i] += value
    return out


def quantile(hist: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram over ``BOUNDS`` (linear inside its bucket); None when empty."""
    total = sum(hist)
    if not total:
        return None
    rank, acc = q * total, 0
    for i, count in enumerate(hist):
        if count and acc + count >= rank:
            if i >= len(BOUNDS):
                return BOUNDS[-1]
            low = BOUNDS[i - 1] if i else 0.0
            return low + (BOUNDS[i] - low) * (rank - acc) / count
        acc += count
    return BOUNDS[-1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _add(acc: list[int], row: Sequence[int]) -> None:
    for i, value in enumerate(row):
        acc[i] += value


def _numbers(row: Sequence[int]) -> dict[str, Any]:
    latency, ttfb = row[LATENCY:LATENCY + BINS], row[TTFB:TTFB + BINS]
    return {"requests": row[REQUESTS], "rps": round(row[REQUESTS] / WINDOW, 3), "errors": row[ERRORS],
            "tokens_in": row[TOKENS_IN], "tokens_out": row[TOKENS_OUT],
            "p50_ms": _ms(quantile(latency, 0.5)), "p99_ms": _ms(quantile(latency, 0.99)),
            "ttfb_p50_ms": _ms(quantile(ttfb, 0.5))}


def _by(buckets: Buckets, now: int, dim: int) -> list[dict[str, Any]]:
    """One dimension's names: their numbers over the window and their chart, busiest first."""
    slots = SECONDS // SLOT
    rows: dict[str, list[int]] = {}
    series: dict[str, list[int]] = {}
    for second, bucket in buckets.items():
        slot = slots - 1 - (now - second) // SLOT
        for combo, row in bucket.items():
            name = combo[dim]
            if second > now - WINDOW:
                _add(rows.setdefault(name, [0] * WIDTH), row)
            series.setdefault(name, [0] * slots)[slot] += row[REQUESTS]
    out = [{"name": name, **_numbers(rows.get(name, [0] * WIDTH)), "series": counts}
           for name, counts in series.items()]
    return sorted(out, key=lambda entry: (-entry["requests"], -sum(entry["series"]), entry["name"]))


def _totals(buckets: Buckets, now: int) -> dict[str, Any]:
    """Per-second requests and errors over the ring, per-slot latency quantiles, and the window's numbers."""
    requests, errors = [0] * SECONDS, [0] * SECONDS
    slots = [[0] * WIDTH for _ in range(SECONDS // SLOT)]
    window = [0] * WIDTH
    for second, bucket in buckets.items():
        age = now - second
        for row in bucket.values():
            requests[SECONDS - 1 - age] += row[REQUESTS]
            errors[SECONDS - 1 - age] += row[ERRORS]
            _add(slots[len(slots) - 1 - age // SLOT], row)
            if age < WINDOW:
                _add(window, row)
    hists = [slot[LATENCY:LATENCY + BINS] for slot in slots]
    return {**_numbers(window), "requests_per_s": requests, "errors_per_s": errors,
            "p50_ms_series": [_ms(quantile(h, 0.5)) for h in hists],
            "p99_ms_series": [_ms(quantile(h, 0.99)) for h in hists]}


def summarize(exports: Iterable[dict[str, Any]], now: float) -> dict[str, Any]:
    second = int(now)
    buckets = merge(exports, second)
    return {"window_seconds": WINDOW, "chart_seconds": SECONDS, "slot_seconds": SLOT,
            "totals": _totals(buckets, second),
            **{dim: _by(buckets, second, i) for i, dim in enumerate(DIMENSIONS)}}
