"""Limits per client model (``limits.models`` on a key and on a team): which entry a model falls
under, and the plan a key's requests for it are held to.

A request is held to its key's and team's overall limits and, for each of the two, to the first
entry of ``limits.models`` its client model name matches: an exact name before any pattern, then the
patterns (``*``: any text) in config order. The plans are built once per pair of matching entries and
remembered per model name (a bounded dict: the names are client input), so the request path looks a
plan up instead of building one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from router.limits import LimitPlan, Limits, Owned, limit_plan

MAX_MODEL_NAMES = 1024  # model names remembered per key before the memory starts over


def glob_regex(pattern: str) -> str:
    """A client model pattern (``*``: any text) as a regular expression to fullmatch."""
    return ".*".join(map(re.escape, pattern.split("*")))


@dataclass(frozen=True, slots=True)
class FirstMatch:
    """Which of an owner's ``limits.models`` patterns a client model name falls under."""

    patterns: tuple[str, ...]
    exact: dict[str, int] = field(init=False, repr=False, compare=False)
    globs: tuple[tuple[re.Pattern[str], int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact: dict[str, int] = {}
        for i, p in enumerate(self.patterns):
            if "*" not in p:
                exact.setdefault(p, i)
        object.__setattr__(self, "exact", exact)
        object.__setattr__(self, "globs", tuple((re.compile(glob_regex(p), re.DOTALL), i)
                                                for i, p in enumerate(self.patterns) if "*" in p))

    def index(self, model: str) -> int:
        """The entry ``model`` falls under: an exact name first, then the first pattern; -1: none."""
        found = self.exact.get(model)
        if found is not None:
            return found
        return next((i for regex, i in self.globs if regex.fullmatch(model)), -1)


class ModelPlans:
    """One key's plans per client model (its own ``limits.models`` and its team's)."""

    __slots__ = ("_key", "_own", "_team", "_team_limits", "_mine", "_theirs", "_pairs", "_names")

    def __init__(self, key: str, own: Limits | None, team: str | None, team_limits: Limits | None):
        self._key, self._own, self._team, self._team_limits = key, own, team, team_limits
        self._mine = FirstMatch(tuple(p for p, _ in own.models) if own else ())
        self._theirs = FirstMatch(tuple(p for p, _ in team_limits.models) if team_limits else ())
        self._pairs: dict[tuple[int, int], LimitPlan | None] = {}  # (key entry, team entry): its plan
        self._names: dict[str, LimitPlan | None] = {}  # client model name: its plan

    def plan(self, model: str) -> LimitPlan | None:
        """The plan a request for ``model`` is held to (None: no limit applies to it)."""
        try:
            return self._names[model]
        except KeyError:
            pass
        plan = self._pair((self._mine.index(model), self._theirs.index(model)))
        if len(self._names) >= MAX_MODEL_NAMES:
            self._names.clear()
        self._names[model] = plan
        return plan

    def each(self) -> tuple[LimitPlan, ...]:
        """A plan for each entry of the key's and of its team's ``limits.models`` (every cell they hold)."""
        pairs = [(i, -1) for i in range(len(self._mine.patterns))] + \
                [(-1, j) for j in range(len(self._theirs.patterns))]
        return tuple(plan for plan in map(self._pair, pairs) if plan is not None)

    def _pair(self, pair: tuple[int, int]) -> LimitPlan | None:
        if pair not in self._pairs:
            self._pairs[pair] = limit_plan(self._key, self._own, self._team, self._team_limits,
                                           *self._entries(pair))
        return self._pairs[pair]

    def _entries(self, pair: tuple[int, int]) -> list[Owned]:
        """The ``limits.models`` entries of ``pair`` (an index per owner, -1: none) as plan owners."""
        mine, theirs = pair
        out: list[Owned] = []
        if mine >= 0 and self._own is not None:
            pattern, limits = self._own.models[mine]
            out.append(("key", self._key, limits, pattern))
        if theirs >= 0 and self._team_limits is not None:
            pattern, limits = self._team_limits.models[theirs]
            out.append(("team", self._team or "", limits, pattern))
        return out


def model_plans(key: str, own: Limits | None, team: str | None, team_limits: Limits | None) -> ModelPlans | None:
    """The key's plans per model; None when neither it nor its team has ``limits.models``."""
    if not (own is not None and own.models) and not (team_limits is not None and team_limits.models):
        return None
    return ModelPlans(key, own, team, team_limits)
