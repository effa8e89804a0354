"""Client budgets (``budget: {tokens, usd, period}`` on an api key and on a team): what a key or team
may spend per UTC calendar day, ISO week (from Monday 00:00 UTC) or calendar month.

Checked at admission (before the rate limits and any upstream call) against what was spent this
period; charged when the response ends (streams too) with the upstream's usage: its total tokens and
its cost from the ``prices`` of the provider that served and the model it was sent. A request that
got no upstream answer charges nothing. A request admitted under its budget may overshoot it by its
own use: the check is at admission, the charge at the end.

The counters live in :class:`Budgets` outside the snapshot (like the limits' ``Limiter``), kept by
owner and period (``key:<name>:month``), not by the budget's amount: spend belongs to the owner and
the period, so a reload that changes a budget's amount keeps what was spent this period (a lowered
budget may be reached at once); a changed ``period`` counts afresh.

With ``state.backend: redis`` the counters of every gateway add up there (``router.budgets_shared``):
charges are batched and sent by a background sync, which also reads back every budget's totals, so
admission reads a local view and never waits for Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import ModuleType
from typing import Any

from router import budget_cells
from router.budget_cells import Bounds
from router.errors import GatewayError
from router.prices import NANO_PER_USD

PERIODS = ("day", "week", "month")
NEVER = 1 << 62  # the bound of an amount a budget does not set: never reached
MAX_PENDING = 10_000  # charges kept for the shared state while it is unreachable, oldest dropped first
DOWN = "budgets cannot be checked: the shared state is unreachable (state.limits_when_down: closed)"


@dataclass(frozen=True, slots=True)
class Budget:
    """One key's or team's ``budget`` (tokens and/or USD per period)."""

    period: str  # day | week | month
    tokens: int | None = None
    usd: float | None = None
    nano: int | None = field(init=False, compare=False)  # usd in nano-dollars, as the counters add it

    def __post_init__(self) -> None:
        object.__setattr__(self, "nano", None if self.usd is None else round(self.usd * NANO_PER_USD))

    def reached(self, spent: list[int]) -> bool:
        """Whether ``spent`` ([tokens, nano-dollars]) has reached this budget (``Budgets.admit`` inlines it)."""
        tokens, nano = self.tokens, self.nano
        return (tokens is not None and spent[0] >= tokens) or (nano is not None and spent[1] >= nano)

    def public(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"period": self.period}
        if self.tokens is not None:
            shown["tokens"] = self.tokens
        if self.usd is not None:
            shown["usd"] = self.usd
        return shown

    def describe(self) -> str:
        amounts = [f"{self.tokens} tokens" if self.tokens is not None else "",
                   money(self.nano) if self.nano is not None else ""]
        return f"{' and '.join(a for a in amounts if a)} per {self.period}"


def compile_budget(section: dict[str, Any] | None) -> Budget | None:
    if not section:
        return None
    usd = section.get("usd")
    return Budget(str(section["period"]), section.get("tokens"), float(usd) if usd is not None else None)


@dataclass(frozen=True, slots=True)
class BudgetCell:
    """One budget of one owner: ``scope`` key or team."""

    scope: str
    owner: str
    budget: Budget
    id: str = field(init=False, compare=False)  # where its spend is kept: by owner and period, not amount
    max_tokens: int = field(init=False, compare=False, repr=False)  # the budget's bounds, NEVER when unset
    max_nano: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.scope}:{self.owner}:{self.budget.period}")
        object.__setattr__(self, "max_tokens", NEVER if self.budget.tokens is None else self.budget.tokens)
        object.__setattr__(self, "max_nano", NEVER if self.budget.nano is None else self.budget.nano)

    def describe(self) -> str:
        return f"the {self.scope} '{self.owner}' budget ({self.budget.describe()})"


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """Every budget a key's requests count against: its own and its team's, compiled once per snapshot."""

    cells: tuple[BudgetCell, ...]
    bounds: Bounds = field(init=False, repr=False, compare=False)  # what router.budget_cells reads

    def __post_init__(self) -> None:
        object.__setattr__(self, "bounds", tuple((c.id, c.max_tokens, c.max_nano) for c in self.cells))

    @property
    def own(self) -> Budget | None:
        return next((c.budget for c in self.cells if c.scope == "key"), None)


def budget_plan(key: str, own: Budget | None, team: str | None, team_budget: Budget | None) -> BudgetPlan | None:
    cells = tuple(BudgetCell(scope, owner, budget)
                  for scope, owner, budget in (("key", key, own), ("team", team or "", team_budget)) if budget)
    return BudgetPlan(cells) if cells else None


@dataclass(frozen=True, slots=True)
class Period:
    """One UTC calendar period: its label (``2026-11-30``, ``2026-W48``, ``2026-11``), start and end."""

    label: str
    start: float
    end: float


def period(kind: str, now: float) -> Period:
    """The ``kind`` period (day, week from Monday, month; UTC) holding the unix time ``now``."""
    day = datetime.fromtimestamp(now, UTC).date()
    if kind == "day":
        start, end, label = day, day + timedelta(days=1), day.isoformat()
    elif kind == "week":
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        end, label = start + timedelta(days=7), f"{year}-W{week:02d}"
    else:
        start = day.replace(day=1)
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
        label = f"{start.year}-{start.month:02d}"
    return Period(label, _seconds(start), _seconds(end))


def _seconds(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def money(nano: int) -> str:
    """Nano-dollars as ``$12.50`` (cents at least, up to the nano-dollar when smaller)."""
    text = f"{nano / NANO_PER_USD:,.9f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def instant(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Budgets:
    """Every budget's spend this period, per process, or as read from the shared state plus this
    process's charges since (``router.budgets_shared``). ``wall``: UTC unix seconds (tests turn it)."""

    def __init__(self, wall: Callable[[], float] = time.time, cells: ModuleType = budget_cells.CELLS) -> None:
        self.wall = wall
        self.cells = cells  # the check and the charge (router.budget_cells.CELLS: compiled when built)
        self._spent: dict[str, list[int]] = {}  # cell id -> [tokens, nano-dollars] this period
        self.periods: dict[str, Period] = {}
        self._start, self._turn = 0.0, 0.0  # the current day: a week or month only turns with a day
        self.sharing = False  # charges are kept for the shared state (``pending``)
        self.pending: dict[str, list[int]] = {}  # "<cell id>:<label>" -> [tokens, nano, seconds to keep]
        self.refuse_down = False  # the shared view cannot be refreshed and state.limits_when_down: closed

    def now(self) -> float:
        """The wall time; the periods rolled over when a day turned (their spend forgotten)."""
        now = self.wall()
        if not self._start <= now < self._turn:
            self._roll(now)
        return now

    def _roll(self, now: float) -> None:
        periods = {kind: period(kind, now) for kind in PERIODS}
        for kind, current in periods.items():
            old = self.periods.get(kind)
            if old is None or old.label != current.label:
                suffix = ":" + kind
                for cell_id in [c for c in self._spent if c.endswith(suffix)]:
                    del self._spent[cell_id]
        self.periods = periods
        self._start, self._turn = periods["day"].start, periods["day"].end

    def admit(self, plan: BudgetPlan) -> None:
        """A 429 (``insufficient_quota``) when the key's or its team's spend this period has reached
        its budget, with Retry-After until the period turns; a 503 when it cannot be known and the
        operator chose ``state.limits_when_down: closed``."""
        now = self.wall()  # now(), inlined: this runs on every request of a key with a budget
        if not self._start <= now < self._turn:
            self._roll(now)
        if self.refuse_down:
            raise GatewayError("unavailable", DOWN, retry_after=1.0)
        if self.cells.reached(plan.bounds, self._spent):
            raise self._over(plan, now)

    def _over(self, plan: BudgetPlan, now: float) -> GatewayError:
        """The 429 naming the used-up budget that frees last (both used up: the later reset)."""
        reached = [c for c in plan.cells if c.budget.reached(self.spent(c))]
        cell = max(reached, key=lambda c: self.periods[c.budget.period].end)
        used, turn = self.spent(cell), self.periods[cell.budget.period].end
        shown = f"{used[0]} tokens" if cell.budget.tokens is not None and used[0] >= cell.budget.tokens \
            else f"{money(used[1])} spent"
        # Retry-After: until the period turns, up to a month (past the day other errors' hints are capped to)
        this = "today" if cell.budget.period == "day" else f"this {cell.budget.period}"
        return GatewayError("quota", f"Budget exhausted: {cell.describe()} is used up ({shown} {this}); "
                                     f"it resets at {instant(turn)}",
                            code="insufficient_quota", retry_after=turn - now,
                            headers={"Retry-After": str(max(1, math.ceil(turn - now)))})

    def spent(self, cell: BudgetCell) -> list[int]:
        """[tokens, nano-dollars] spent by ``cell``'s owner this period, as far as this process knows."""
        self.now()
        return list(self._spent.get(cell.id, (0, 0)))

    def charge(self, plan: BudgetPlan, tokens: int, nano: int) -> None:
        """Add a finished request's use to its key's and team's spend this period (and, with a shared
        state, to what the next sync sends)."""
        if tokens <= 0 and nano <= 0:
            return
        now = self.wall()  # now(), inlined
        if not self._start <= now < self._turn:
            self._roll(now)
        self.cells.add(plan.bounds, self._spent, tokens, nano)
        if self.sharing:
            for cell in plan.cells:
                self._keep(cell, tokens, nano, now)

    def _keep(self, cell: BudgetCell, tokens: int, nano: int, now: float) -> None:
        current = self.periods[cell.budget.period]
        key = f"{cell.id}:{current.label}"
        kept = self.pending.get(key)
        if kept is None:
            self.pending[key] = [tokens, nano, int(current.end - now) + 1]
            while len(self.pending) > MAX_PENDING:
                del self.pending[next(iter(self.pending))]
        else:
            kept[0] += tokens
            kept[1] += nano

    def merge(self, kept: dict[str, list[int]]) -> None:
        """Charges a sync could not send: back before those made since (oldest first; they add up)."""
        merged = {key: list(value) for key, value in kept.items()}
        for key, (tokens, nano, ttl) in self.pending.items():
            older = merged.get(key)
            if older is None:
                merged[key] = [tokens, nano, ttl]
            else:
                older[0] += tokens
                older[1] += nano
        while len(merged) > MAX_PENDING:
            del merged[next(iter(merged))]
        self.pending = merged

    def adopt(self, totals: dict[str, tuple[int, int]], labels: dict[str, str]) -> None:
        """Every gateway's totals as read from the shared state (by cell id, for the period labels
        they were read for), plus this process's charges made since (still pending). Never lower than
        what this process knew: a Redis that restarted empty gives no budget back."""
        self.now()
        for cell_id, (tokens, nano) in totals.items():
            kind = cell_id.rpartition(":")[2]
            if labels.get(kind) != self.periods[kind].label:
                continue  # read for a period that turned since
            mine = self.pending.get(f"{cell_id}:{labels[kind]}") or (0, 0, 0)
            known = self._spent.get(cell_id) or (0, 0)
            self._spent[cell_id] = [max(tokens + mine[0], known[0]), max(nano + mine[1], known[1])]
