"""Usage: per UTC day, client key, team and client model, what went through the gateway.

Each row counts ``requests``, ``errors`` (final status >= 400: the gateway's own refusals such as
403 and 429 included, and 499 when the client went away), tokens (``input_tokens`` with the cached
ones, ``output_tokens`` with the reasoning ones, then those two subsets) and ``cost_nano`` (whole
nano-dollars from ``prices`` for the provider that answered and the upstream model it was sent).
Tokens and cost count whatever the status: an upstream that reported usage was used. Only proxied
model requests count (not health checks, model lists, token counts or admin calls); a request
without a key (auth off) counts under key "".

The :class:`UsageLedger` belongs to the gateway, not to a snapshot: a reload keeps it. Recording is
one dict lookup and a few integer adds, after the response is on its way (the dispatcher's finish
step). It is bounded: client model names are client input (a wildcard mapping passes any), so a day
holds at most ``usage.max_rows_per_day`` rows (then a new model counts as ``(other)``), the process
keeps ``usage.retention_days`` days and at most ``MAX_ROWS`` rows (oldest days dropped first).

With ``state.backend: redis`` the ledger also knows what it has not sent yet: each row keeps the
totals already written (``router.usage_sync`` sends the difference every ``state.sync_interval``).
What Redis could not take stays unsent, merged in the rows (sums), until it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.exchange import Exchange
    from router.shared_state import SharedState
    from router.usage_sync import UsageSync

COUNTERS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_nano")
N = len(COUNTERS)  # a row is [totals..., sent...]: 2 * N ints
OTHER = "(other)"  # the model of a day's rows past max_rows_per_day
MAX_ROWS = 200_000  # rows the process keeps over all days
DAY = 86_400
SEP = "\x1f"  # between a row's names in Redis fields: never inside one (replaced when recorded)

RowKey = tuple[str, str, str]  # (key name, team, client model); "" when absent
Row = list[int]


@dataclass(frozen=True, slots=True)
class UsageSettings:
    """The ``usage`` section."""

    retention_days: int = 400  # days kept (in the process, and in Redis after the day ended)
    max_rows_per_day: int = 10_000  # (key, team, model) rows a day holds; past it: model "(other)"


def compile_usage(section: dict[str, Any] | None) -> UsageSettings:
    section = section or {}
    d = UsageSettings()
    return UsageSettings(int(section.get("retention_days", d.retention_days)),
                         int(section.get("max_rows_per_day", d.max_rows_per_day)))


def day_of(seconds: float) -> str:
    """The UTC day of a unix time, ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def _clean(name: str) -> str:
    """A name as a Redis field can hold it: no separator, valid UTF-8 (a lone surrogate becomes "?")."""
    return name.replace(SEP, "\ufffd").encode("utf-8", "replace").decode("utf-8")


class UsageLedger:
    """The gateway's usage rows by day; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.time, settings: UsageSettings | None = None) -> None:
        self.clock = clock  # wall time (tests turn days with their own)
        self.settings = settings or UsageSettings()
        self.days: dict[str, dict[RowKey, Row]] = {}
        self.rows_kept = 0
        self.sync: UsageSync | None = None  # with a shared state: what sends the rows to Redis
        self.dirty: dict[str, set[RowKey]] | None = None  # rows changed since sent (only with a sync)
        self._start = self._end = 0.0  # today's bounds (unix time)
        self._today: dict[RowKey, Row] = {}
        self._dirty_today: set[RowKey] | None = None

    # --- recording (the request path, after the response) ------------------------------------------

    def record(self, x: Exchange, status: int) -> None:
        """Count one finished exchange; anything but a proxied model request is skipped."""
        if x.codec is None:
            return
        now = self.clock()
        if not self._start <= now < self._end:
            self._turn(now)
        key = x.key
        rk = (key.name, key.team or "", x.client_model or "") if key is not None else ("", "", x.client_model or "")
        row = self._today.get(rk)
        if row is None:
            rk, row = self._add(rk)
        row[0] += 1
        if status >= 400:
            row[1] += 1
        usage = x.usage
        if usage is not None:
            row[2] += usage.input_tokens
            row[3] += usage.output_tokens
            row[4] += usage.cached_tokens
            row[5] += usage.reasoning_tokens
            row[6] += x.cost()  # computed once for budgets and usage
        if self._dirty_today is not None:
            self._dirty_today.add(rk)

    def _turn(self, now: float) -> None:
        """A new day (or a clock set back): today's rows and bounds, then the old days pruned."""
        start = now - now % DAY
        self._start, self._end = start, start + DAY
        day = day_of(now)
        self._today = self.days.setdefault(day, {})
        self._dirty_today = self.dirty.setdefault(day, set()) if self.dirty is not None else None
        self._prune(day)

    def _add(self, rk: RowKey) -> tuple[RowKey, Row]:
        """A new row for today, or the day's ``(other)`` row for its key once the day is full."""
        rows = self._today
        rk = (_clean(rk[0]), _clean(rk[1]), _clean(rk[2]))
        if rk not in rows and len(rows) >= self.settings.max_rows_per_day:
            rk = (rk[0], rk[1], OTHER)
        row = rows.get(rk)
        if row is None:
            row = rows[rk] = [0] * (2 * N)
            self.rows_kept += 1
            if self.rows_kept > MAX_ROWS:
                self._prune(day_of(self._start))
        return rk, row

    def _prune(self, today: str) -> None:
        """Days past the retention, then the oldest days while over ``MAX_ROWS`` (never today)."""
        oldest = day_of(self._start - (self.settings.retention_days - 1) * DAY)
        for day in sorted(self.days):
            if day >= today or (day >= oldest and self.rows_kept <= MAX_ROWS):
                break
            self.rows_kept -= len(self.days.pop(day))
            if self.dirty is not None:
                self.dirty.pop(day, None)

    # --- settings and the shared state ----------------------------------------------------------------

    def configure(self, settings: UsageSettings) -> None:
        """A snapshot's ``usage:`` went live (rows are kept; a shorter retention prunes at the next day)."""
        self.settings = settings

    def share(self, shared: SharedState | None) -> None:
        """Follow the gateway's shared state: a sync sends the rows to it (None: no more syncing;
        what was not sent stays in the rows, for a later one)."""
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        if shared is None:
            self.dirty = self._dirty_today = None
            return
        from router.usage_sync import UsageSync  # redis-py: only with backend redis

        if self.dirty is None:  # every row not sent in full is dirty (all of them, the first time)
            self.dirty = {day: {rk for rk, row in rows.items() if row[:N] != row[N:]}
                          for day, rows in self.days.items()}
        self._dirty_today = self.dirty.setdefault(day_of(self._start), set()) if self._end else None
        self.sync = UsageSync(self, shared)
        self.sync.start()

    async def close(self) -> None:
        """Shutting down: what was not sent yet goes out once (bounded)."""
        if self.sync is not None:
            await self.sync.close()
            self.sync = None

    # --- reading ---------------------------------------------------------------------------------------

    def unsent(self) -> Iterator[tuple[str, RowKey, list[int]]]:
        """(day, row, counters written since the last successful send) for every changed row."""
        for day, keys in (self.dirty or {}).items():
            rows = self.days.get(day, {})
            for rk in keys:
                row = rows.get(rk)
                if row is not None:
                    yield day, rk, [row[i] - row[N + i] for i in range(N)]

    def take_unsent(self, limit: int) -> list[tuple[str, RowKey, list[int]]]:
        """Up to ``limit`` rows' unsent counters, marked sent (``give_back`` undoes it when the send failed)."""
        out: list[tuple[str, RowKey, list[int]]] = []
        for day, keys in (self.dirty or {}).items():
            rows = self.days.get(day, {})
            while keys and len(out) < limit:
                rk = keys.pop()
                row = rows.get(rk)
                if row is None:
                    continue
                delta = [row[i] - row[N + i] for i in range(N)]
                if any(delta):
                    row[N:] = row[:N]
                    out.append((day, rk, delta))
            if len(out) >= limit:
                break
        return out

    def give_back(self, taken: list[tuple[str, RowKey, list[int]]]) -> None:
        """A send failed: its rows are unsent again (rows dropped meanwhile are gone with their day)."""
        for day, rk, delta in taken:
            row = self.days.get(day, {}).get(rk)
            if row is None or self.dirty is None:
                continue
            for i in range(N):
                row[N + i] -= delta[i]
            self.dirty.setdefault(day, set()).add(rk)

    def local(self, first: str, last: str) -> Iterator[tuple[str, RowKey, list[int]]]:
        """(day, row, totals) of this process for the days ``first``..``last`` (inclusive)."""
        for day, rows in self.days.items():
            if first <= day <= last:
                for rk, row in rows.items():
                    yield day, rk, row[:N]
