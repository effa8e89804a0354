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
from typing import Any, Protocol

from router.errors import GatewayError
from router.limit_headers import RateStatus, Span, Status, rate_status

PERIOD_S = 60.0  # rpm and tpm: per minute
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


@dataclass(slots=True)
class Admission:
    """What one admitted request holds: its tpm reservation and its concurrency slots."""

    plan: LimitPlan
    tokens: int
    released: bool = False
    shared: bool = False  # rpm and tpm were reserved in the shared state (corrections go there too)
    status: Status | None = None  # the tightest windows once admitted (the headers)
    lease: Callable[[], None] | None = None  # gives back its concurrency lease in the shared state


class SharedLimits(Protocol):
    """The shared state's side of the limits (``router.state_limits.SharedLimiter``, ``state.backend: redis``)."""

    limits_open: bool  # when it cannot be reached: the per-process limiter (True) or a 503 (False)

    @property
    def up(self) -> bool: ...

    async def reserve_limits(self, tag: str, cells: Sequence[tuple[str, float, int, int]],
                             slots: Sequence[tuple[str, int]] = ()
                             ) -> tuple[int, float, list[tuple[int, float]], Callable[[], None] | None] | None: ...

    def adjust_limits(self, tag: str, cells: Sequence[tuple[str, float, int, int]]) -> None: ...


class Limiter:
    """The per-process counters of every limit; ``clock`` (seconds, monotonic) for tests. ``shared``:
    with ``state.backend: redis``, where rpm and tpm are reserved instead (set by the gateway)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.shared: SharedLimits | None = None
        self._tat: dict[str, float] = {}
        self._inflight: dict[str, int] = {}

    def admit(self, plan: LimitPlan, tokens: int) -> Admission:
        """Reserve the request in every cell of ``plan``, all or none; a 429 naming the limit (the one
        that frees last) with its Retry-After otherwise."""
        admission = self.hold(plan, tokens)
        try:
            admission.status = self.take(plan, tokens)
        except GatewayError:
            self.release(admission)
            raise
        return admission

    def hold(self, plan: LimitPlan, tokens: int) -> Admission:
        """Take a slot of every concurrency cell, all or none (a 429 when one is full)."""
        for cell in plan.concurrent:
            if self._inflight.get(cell.id, 0) >= cell.limit:
                raise over(cell, 1.0)
        for cell in plan.concurrent:
            self._inflight[cell.id] = self._inflight.get(cell.id, 0) + 1
        return Admission(plan, tokens)

    def take(self, plan: LimitPlan, tokens: int) -> Status:
        """Reserve rpm and tpm in process, all or none (a 429 naming the cell that waits longest); the
        tightest windows after it (for the headers). The GCRA step of ``gcra``, inlined: a cell holds
        ``burst * interval`` = PERIOD_S seconds, so the cell that waits longest has the latest TAT.
        Written for speed (no helper calls, no keyword builtins): it runs on every request of a key
        with limits."""
        now = self.clock()
        tats = self._tat
        new: list[float] = []
        latest, worst = now, None
        for cell in plan.rates:
            tat = tats.get(cell.id, now)
            if tat < now:
                tat = now
            if cell.rpm:
                tat += cell.interval
            else:
                tat += (tokens if tokens <= cell.limit else cell.limit) * cell.interval if tokens > 1 else cell.interval
            new.append(tat)
            if tat > latest:
                latest, worst = tat, cell
        if worst is not None and latest - PERIOD_S > now:
            raise over(worst, latest - PERIOD_S - now)
        used: list[float] = []  # each cell's reserved seconds (a comprehension would cost a frame)
        for cell, tat in zip(plan.rates, new):  # noqa: B905 - one length by construction; strict= costs a keyword call
            tats[cell.id] = tat
            used.append(tat - now)
        return tightest(plan.rates, used)

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
        for cell in admission.plan.concurrent:
            left = self._inflight.get(cell.id, 0) - 1
            if left > 0:
                self._inflight[cell.id] = left
            else:
                self._inflight.pop(cell.id, None)
        if admission.lease is not None:
            admission.lease()

    def adjust(self, admission: Admission, delta: int) -> None:
        """Correct the tpm cells by ``delta`` tokens (real use minus the estimate): charged even past
        the burst (the tokens were spent), given back never below now."""
        if not delta:
            return
        if admission.shared and self.shared is not None:
            self.shared.adjust_limits(admission.plan.tag, [(c.id, c.interval, c.limit, delta)
                                                           for c in admission.plan.tpm])
            return
        now = self.clock()
        tats = self._tat
        for cell in admission.plan.tpm:  # the new TAT of ``gcra``, inlined (every response of a tpm limit)
            tat = tats.get(cell.id, now)
            if tat < now:
                tat = now
            tat += delta * cell.interval
            tats[cell.id] = tat if tat > now else now

    def keep(self, cells: Collection[str]) -> None:
        """A snapshot went live: forget the rpm/tpm counters of cells it no longer has (a removed key
        or team, a changed limit) and those at rest (a TAT already past reads the same as none). The
        in-flight counts of removed cells stay until their requests end: ``release`` never goes below 0."""
        now = self.clock()
        self._tat = {cell: tat for cell, tat in self._tat.items() if tat > now and cell in cells}

    def status(self, plan: LimitPlan) -> RateStatus:
        """The tightest rpm and tpm windows of ``plan`` now (the fewest remaining), for the headers."""
        now = self.clock()
        return rate_status(tightest(plan.rates, [max(0.0, self._tat.get(cell.id, now) - now) for cell in plan.rates]))

    def pending(self, cell: Cell) -> float:
        """The cell's theoretical arrival time minus now (seconds of reserved use; tests, headers)."""
        now = self.clock()
        return max(0.0, self._tat.get(cell.id, now) - now)


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
