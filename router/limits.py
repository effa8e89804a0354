"""Client rate limits (``limits: {rpm, tpm, concurrency}`` on an api key and on a team), per process.

rpm and tpm are cells of a generic cell rate algorithm (GCRA, the same semantics as the Redis script
``router.state_scripts.GCRA``): a limit of N per minute admits a burst of N, then one unit every
60/N seconds; no fixed window. A request takes cost 1 from each rpm cell and its token estimate from
each tpm cell, from all of them or none. concurrency is a count of requests in flight, released when
the response ends (the caller's try/finally).

The counters live in a :class:`Limiter` outside the snapshot (like the accounts' StateStore), keyed
by the owner's name and the limit's value: a reload keeps the counters of unchanged keys and teams,
and a changed limit starts afresh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from router import limit_cells
from router.errors import GatewayError
from router.limit_cells import PERIOD_S, Counter
from router.limit_headers import RateStatus, Span, Status, rate_status

UNITS = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrency": "requests in flight"}
UNIT = {"rpm": "request per minute", "tpm": "token per minute", "concurrency": "request in flight"}  # of 1


@dataclass(frozen=True, slots=True)
class Limits:
    """One key's or team's ``limits`` (None: no such limit); ``models``: the limits of the client
    models matching each pattern (``limits.models``, in config order), on top of these."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    models: tuple[tuple[str, Limits], ...] = ()

    def values(self) -> dict[str, int]:
        """Each limit set, by kind."""
        return {k: v for k, v in (("rpm", self.rpm), ("tpm", self.tpm), ("concurrency", self.concurrency))
                if v is not None}

    def public(self) -> dict[str, Any]:
        values: dict[str, Any] = self.values()
        return {**values, "models": {p: m.public() for p, m in self.models}} if self.models else values


def compile_limits(section: dict[str, Any] | None) -> Limits | None:
    if not section:
        return None
    models = tuple((pattern, Limits(body.get("rpm"), body.get("tpm"), body.get("concurrency")))
                   for pattern, body in (section.get("models") or {}).items())
    return Limits(section.get("rpm"), section.get("tpm"), section.get("concurrency"), models)


@dataclass(frozen=True, slots=True)
class Cell:
    """One limit of one owner: ``scope`` key or team, the owner's name, the kind and its value;
    ``model``: the ``limits.models`` pattern it holds requests for ("": every model)."""

    scope: str
    owner: str
    kind: str  # rpm | tpm | concurrency
    limit: int
    model: str = ""
    id: str = field(init=False, compare=False)  # where its counter is kept: changes with the limit
    interval: float = field(init=False, compare=False, repr=False)  # seconds per unit (rpm, tpm)
    rpm: bool = field(init=False, compare=False, repr=False)  # kind == "rpm", read on every request

    def __post_init__(self) -> None:
        at = f":{self.model}" if self.model else ""  # a pattern's cells: the pattern is part of their id
        object.__setattr__(self, "id", f"{self.scope}:{self.owner}:{self.kind}:{self.limit}{at}")
        object.__setattr__(self, "interval", PERIOD_S / self.limit)
        object.__setattr__(self, "rpm", self.kind == "rpm")

    def describe(self) -> str:
        models = f" for the models '{self.model}'" if self.model else ""
        unit = (UNIT if self.limit == 1 else UNITS)[self.kind]
        return f"the {self.scope} '{self.owner}' {self.kind} limit{models} ({self.limit} {unit})"


@dataclass(frozen=True, slots=True)
class LimitPlan:
    """Every limit a key's requests are held to: its own and its team's (and for a model, those of
    the ``limits.models`` entries it matches), compiled once per snapshot."""

    rates: tuple[Cell, ...]  # rpm and tpm
    concurrent: tuple[Cell, ...]
    tag: str = ""  # what the shared state groups the cells under: the team, else the key
    tokens: bool = field(init=False)  # whether a request needs its token estimate
    tpm: tuple[Cell, ...] = field(init=False, repr=False, compare=False)  # the rate cells corrected by the usage

    def __post_init__(self) -> None:
        object.__setattr__(self, "tpm", tuple(c for c in self.rates if c.kind == "tpm"))
        object.__setattr__(self, "tokens", bool(self.tpm))

    def costs(self, tokens: int) -> list[tuple[str, float, int, int]]:
        """Each rate cell as the shared state reserves it: (id, seconds per unit, burst, cost)."""
        return [(c.id, c.interval, c.limit, Limiter.cost(c, tokens)) for c in self.rates]

    def cells(self) -> tuple[Cell, ...]:
        return self.rates + self.concurrent


# one owner's limits in a plan: (scope, owner, its limits, the limits.models pattern or "")
Owned = tuple[str, str, Limits | None, str]


def limit_plan(key: str, own: Limits | None, team: str | None, team_limits: Limits | None,
               *by_model: Owned) -> LimitPlan | None:
    """The plan of a key's requests: its own limits, its team's, and ``by_model`` (the entries of
    ``limits.models`` a request's model matches); None when no limit applies."""
    owners: tuple[Owned, ...] = (("key", key, own, ""), ("team", team or "", team_limits, ""), *by_model)
    cells = [Cell(scope, owner, kind, value, model)
             for scope, owner, limits, model in owners if limits
             for kind, value in limits.values().items()]
    if not cells:
        return None
    return LimitPlan(tuple(c for c in cells if c.kind != "concurrency"),
                     tuple(c for c in cells if c.kind == "concurrency"), f"team:{team}" if team else f"key:{key}")


def gcra(tat: float, now: float, interval: float, burst: int, cost: int) -> tuple[float, float]:
    """The GCRA step of ``router.state_scripts.GCRA`` in seconds: (the new theoretical arrival time,
    how long until ``cost`` fits; 0 when it fits now, and then the new TAT is to be stored)."""
    tat = max(tat, now)
    new_tat = max(tat + cost * interval, now)
    return new_tat, max(0.0, new_tat - burst * interval - now)


class Admission:
    """What one admitted request holds: its tpm reservation and its concurrency slots. A plain
    class called with positions: made on every request of a key with limits (a dataclass called
    with keywords costs 3.7k instructions, this 2.1k)."""

    __slots__ = ("bound", "lease", "plan", "released", "shared", "status", "tokens")

    def __init__(self, plan: LimitPlan, tokens: int, status: Status | None = None, bound: Bound | None = None):
        self.plan = plan
        self.tokens = tokens
        self.released = False
        self.shared = False  # rpm and tpm were reserved in the shared state (corrections go there too)
        self.status = status  # the tightest windows once admitted (the headers)
        self.lease: Callable[[], None] | None = None  # gives back its concurrency lease in the shared state
        self.bound = bound  # the plan's counters (set by the Limiter that admitted it)


class SharedLimits(Protocol):
    """The shared state's side of the limits (``router.state_limits.SharedLimiter``, ``state.backend: redis``)."""

    limits_open: bool  # when it cannot be reached: the per-process limiter (True) or a 503 (False)

    @property
    def up(self) -> bool: ...

    async def reserve_limits(self, tag: str, cells: Sequence[tuple[str, float, int, int]],
                             slots: Sequence[tuple[str, int]] = ()
                             ) -> tuple[int, float, list[tuple[int, float]], Callable[[], None] | None] | None: ...

    def adjust_limits(self, tag: str, cells: Sequence[tuple[str, float, int, int]]) -> None: ...


class Bound:
    """A plan with its cells' counters looked up once: the request path reads attributes of plain
    tuples, no dict lookups by cell id (``Limiter.bound``)."""

    __slots__ = ("plan", "rates", "slots", "tpm")

    def __init__(self, plan: LimitPlan, counters: dict[str, Counter], new: Callable[[], Counter]) -> None:
        def counter(cell: Cell) -> Counter:
            found = counters.get(cell.id)
            if found is None:
                found = counters[cell.id] = new()
            return found

        self.plan = plan
        # (counter, seconds per unit, whether rpm, the limit, the cell) per rpm and tpm cell
        self.rates = tuple((counter(c), c.interval, c.rpm, c.limit, c) for c in plan.rates)
        self.slots = tuple((counter(c), c.limit, c) for c in plan.concurrent)
        self.tpm = tuple((counter(c), c.interval) for c in plan.tpm)


class Limiter:
    """The per-process counters of every limit; ``clock`` (seconds, monotonic) for tests. ``shared``:
    with ``state.backend: redis``, where rpm and tpm are reserved instead (set by the gateway).
    ``cells``: the arithmetic (``router.limit_cells.CELLS``: compiled when built; tests pass the
    Python one too)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, cells: ModuleType = limit_cells.CELLS):
        self.clock = clock
        self.cells = cells
        self.shared: SharedLimits | None = None
        self._counters: dict[str, Counter] = {}  # cell id -> its counters
        self._bound: dict[int, Bound] = {}  # id(plan) -> its counters (the Bound keeps the plan alive)

    def bound(self, plan: LimitPlan) -> Bound:
        """The plan with its counters, bound on its first request (a snapshot's plans are few)."""
        b = self._bound.get(id(plan))
        if b is None:
            b = self._bound[id(plan)] = Bound(plan, self._counters, self.cells.Counter)
        return b

    def admit(self, plan: LimitPlan, tokens: int) -> Admission:
        """Reserve the request in every cell of ``plan``, all or none; a 429 naming the limit (the one
        that frees last) with its Retry-After otherwise (``limit_cells.admit``)."""
        b = self._bound.get(id(plan)) or self.bound(plan)
        return Admission(plan, tokens, self.cells.admit(b.slots, b.rates, tokens, self.clock(), over), b)

    def hold(self, plan: LimitPlan, tokens: int) -> Admission:
        """Take a slot of every concurrency cell, all or none (a 429 when one is full)."""
        b = self._bound.get(id(plan)) or self.bound(plan)
        if b.slots:
            self.cells.admit(b.slots, (), tokens, 0.0, over)
        return Admission(plan, tokens, None, b)

    def take(self, plan: LimitPlan, tokens: int) -> Status:
        """Reserve rpm and tpm in process, all or none (a 429 naming the cell that waits longest); the
        tightest windows after it (for the headers)."""
        b = self._bound.get(id(plan)) or self.bound(plan)
        status: Status = self.cells.take(b.rates, tokens, self.clock(), over)  # a module: its functions are Any
        return status

    @staticmethod
    def cost(cell: Cell, tokens: int) -> int:
        """1 for rpm; the estimate for tpm, at most the whole limit (a larger request fits a full
        bucket, and its real use is charged afterwards)."""
        return 1 if cell.kind == "rpm" else min(max(tokens, 1), cell.limit)

    def release(self, admission: Admission) -> None:
        """The response ended (or failed, or its client went away): free its concurrency slots, once."""
        if admission.released:
            return
        admission.released = True
        b = admission.bound
        if b is not None and b.slots:
            self.cells.release(b.slots)
        if admission.lease is not None:
            admission.lease()

    def settle(self, admission: Admission, used: int | None) -> None:
        """The response ended: free its slots (``release``) and correct its tpm reservation to the
        ``used`` tokens (None: no usage was reported; the estimate stands)."""
        delta = 0 if used is None or not admission.plan.tokens else used - admission.tokens
        b = admission.bound
        if admission.released or admission.shared or admission.lease is not None or b is None:
            self.release(admission)
            self.adjust(admission, delta)
            return
        admission.released = True  # in this process (every response of a key with limits): one call
        self.cells.settle(b.slots, b.tpm, delta, self.clock())

    def adjust(self, admission: Admission, delta: int) -> None:
        """Correct the tpm cells by ``delta`` tokens (real use minus the estimate): charged even past
        the burst (the tokens were spent), given back never below now."""
        if not delta:
            return
        if admission.shared and self.shared is not None:
            self.shared.adjust_limits(admission.plan.tag, [(c.id, c.interval, c.limit, delta)
                                                           for c in admission.plan.tpm])
            return
        b = admission.bound or self.bound(admission.plan)
        self.cells.adjust(b.tpm, delta, self.clock())

    def keep(self, cells: Collection[str]) -> None:
        """A snapshot went live: forget the counters of cells it no longer has (a removed key or team,
        a changed limit) and the plans bound so far (the new snapshot's bind on their first request,
        to the same counters for unchanged cells). A removed cell's counter stays while requests hold
        its slots (a key removed and added back in that time counts them), until a later reload."""
        self._counters = {cell: c for cell, c in self._counters.items() if cell in cells or c.inflight > 0}
        self._bound = {}

    def inflight(self) -> dict[str, int]:
        """Each cell's requests in flight here (tests, admin)."""
        return {cell: c.inflight for cell, c in self._counters.items() if c.inflight}

    def reserved(self) -> set[str]:
        """The rpm and tpm cells with time reserved ahead of now (the others read as untouched)."""
        now = self.clock()
        return {cell for cell, c in self._counters.items() if c.tat > now}

    def status(self, plan: LimitPlan) -> RateStatus:
        """The tightest rpm and tpm windows of ``plan`` now (the fewest remaining), for the headers."""
        return rate_status(tightest(plan.rates, [self.pending(cell) for cell in plan.rates]))

    def pending(self, cell: Cell) -> float:
        """The cell's theoretical arrival time minus now (seconds of reserved use; tests, headers)."""
        now = self.clock()
        counter = self._counters.get(cell.id)
        return max(0.0, counter.tat - now) if counter is not None else 0.0


def over(cell: Cell, wait: float) -> GatewayError:
    seconds = max(1, math.ceil(wait))
    return GatewayError("rate_limit", f"Rate limit reached: {cell.describe()}; retry in {seconds}s",
                        code="rate_limit_exceeded", retry_after=wait)


def tightest(cells: Sequence[Cell], used: Sequence[float]) -> Status:
    """The rpm and tpm windows with the fewest remaining, from each cell's reserved seconds (a plain
    loop of plain tuples: it runs on every response to a key with limits)."""
    requests: Span | None = None
    tokens: Span | None = None
    for cell, seconds in zip(cells, used):  # noqa: B905 - one length by construction; strict= costs a keyword call
        remaining = int((PERIOD_S - seconds) / cell.interval)  # int() floors what is not negative
        if remaining < 0:
            remaining = 0
        if cell.rpm:
            if requests is None or remaining < requests[1]:
                requests = (cell.limit, remaining, seconds)
        elif tokens is None or remaining < tokens[1]:
            tokens = (cell.limit, remaining, seconds)
    return requests, tokens
