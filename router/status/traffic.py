"""Traffic over the last minutes for the status page: a fixed ring of per-second buckets.

Fed once per API request from ``Metrics.observe`` (the access-log point). A bucket maps the request's
(client model, key name, provider) to one row of integers: requests, errors, tokens in and out, and a
fixed latency and time-to-first-byte histogram. One dict lookup and a few list increments per request;
the per-model, per-key and per-provider views are sums made when the page asks (``view``).

Memory is bounded: ``SECONDS`` buckets, each with at most ``MAX_ROWS`` rows (key names and providers
are config names; client model names are client input, so past the cap they count as "other"), and
the last ``FAILED`` failed requests.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.exchange import Exchange

SECONDS = 300  # the ring: five minutes of one-second buckets
MAX_ROWS = 256  # (model, key, provider) combinations per second
FAILED = 30  # recent failed requests kept
# latency bounds in seconds, the metrics' buckets: quantiles are interpolated inside a bucket
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BINS = len(BOUNDS) + 1
REQUESTS, ERRORS, TOKENS_IN, TOKENS_OUT, LATENCY = 0, 1, 2, 3, 4
TTFB = LATENCY + BINS
WIDTH = TTFB + BINS

Row = list[int]
Combo = tuple[str, str, str]  # client model, key name, provider
Bucket = dict[Combo, Row]


class Traffic:
    """One process's traffic; ``export`` gives what the other workers merge (``view.merged``)."""

    __slots__ = ("_ring", "_second", "_rows", "failed", "failures", "shared_until", "failures_shared")

    def __init__(self) -> None:
        self._ring: list[tuple[int, Bucket]] = [(-1, {})] * SECONDS
        self._second = -1
        self._rows: Bucket = {}
        self.failed: deque[dict[str, Any]] = deque(maxlen=FAILED)
        self.failures = 0  # failed requests ever recorded (the newest are in ``failed``)
        # with state: redis (router.status.replicas): the seconds before this one are in Redis, and
        # this many failures were sent there
        self.shared_until = 0
        self.failures_shared = 0

    def observe(self, x: Exchange, status: int, latency: float) -> None:
        endpoint = x.endpoint
        if endpoint is None or endpoint.codec is None:  # only API traffic (not health checks, admin, scrapes)
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._turn(second)
        provider = x.provider
        combo = (x.client_model or "", x.client_key or "", provider.name if provider is not None else "")
        row = self._rows.get(combo)
        if row is None:
            row = self._row(combo)
        row[REQUESTS] += 1
        usage = x.usage
        if usage is not None:
            row[TOKENS_IN] += usage.input_tokens
            row[TOKENS_OUT] += usage.output_tokens
        row[LATENCY + bisect_left(BOUNDS, latency)] += 1
        if x.ttfb is not None:
            row[TTFB + bisect_left(BOUNDS, x.ttfb)] += 1
        if status >= 400:
            row[ERRORS] += 1
            self._fail(x, combo, status, now)

    def _turn(self, second: int) -> None:
        """A new second: its bucket replaces the one from ``SECONDS`` ago."""
        self._second = second
        self._rows = {}
        self._ring[second % SECONDS] = (second, self._rows)

    def _row(self, combo: Combo) -> Row:
        rows = self._rows
        if len(rows) >= MAX_ROWS:
            combo = ("other", combo[1], combo[2])
            if combo in rows:
                return rows[combo]
        row = rows[combo] = [0] * WIDTH
        return row

    def _fail(self, x: Exchange, combo: Combo, status: int, now: float) -> None:
        self.failures += 1
        self.failed.append({"at": round(now, 3), "request_id": x.request_id, "status": status,
                            "handler": x.handler, "model": combo[0], "key": combo[1], "provider": combo[2],
                            "attempts": [str(a.outcome) for a in x.attempts], "error": x.error})

    def export(self, now: float | None = None, since: int = 0) -> dict[str, Any]:
        """The buckets of the last ``SECONDS`` seconds (from ``since`` on) and the failed requests, as
        plain JSON data: ``{"seconds": [[second, [[model, key, provider, *row], ...]], ...], "failed": [...]}``."""
        floor = max(int(time.time() if now is None else now) - SECONDS, since - 1)
        return {"seconds": self.seconds(floor + 1, 1 << 62), "failed": list(self.failed)}

    def seconds(self, first: int, end: int) -> list[list[Any]]:
        """The buckets of the seconds from ``first`` up to ``end`` (excluded) that saw requests, oldest first."""
        out = [[second, [[*combo, *row] for combo, row in rows.items()]]
               for second, rows in self._ring if first <= second < end and rows]
        return sorted(out, key=lambda s: s[0])

    def unshared_failures(self) -> list[dict[str, Any]]:
        """The failed requests not yet sent to the shared state (at most the ``FAILED`` newest)."""
        fresh = min(self.failures - self.failures_shared, len(self.failed))
        return list(self.failed)[len(self.failed) - fresh:] if fresh > 0 else []
