"""A mapping entry's plan: one target, an ordered fallback list, or a weighted split, nested.

Compiled once per snapshot from the YAML of ``model_mapping`` (a ``provider/model`` string, a list,
``{fallback: [...], on: [...]}``, ``{split: {...}, on: [...]}``); the engine walks it per request
(:mod:`router.fallback`). ``on`` names the outcomes that move on from a node's current choice (to the
next entry of a fallback list, to the other arms of a split); a node without ``on`` uses
``model_mapping.fallback_on``, else :data:`DEFAULT_TRIGGERS`.

Triggers: ``exhausted`` (no account could take the request: every one cooling or ejected, or none
with a key), ``circuit_open``, ``429`` (after the provider's retries), ``5xx`` or one 5xx status,
``timeout``, ``connect_error``, ``reset``, ``malformed`` and ``context_length`` (a 400 its upstream
codec reads as "the prompt is too long"). No other 4xx ever moves on: it is the client's request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

Pointer = tuple[str | int, ...]

DEFAULT_TRIGGERS: frozenset[int | str] = frozenset(
    {"exhausted", "circuit_open", 429, "5xx", "timeout", "connect_error", "reset", "malformed", "context_length"})
NAMED_TRIGGERS = frozenset({"exhausted", "circuit_open", "5xx", "timeout", "connect_error", "reset", "malformed",
                            "context_length"})
MAX_DEPTH = 4  # nodes from an entry to its deepest target (a split of fallback lists holding a split: 3)
MAX_TARGETS = 32  # targets in one entry, however nested


def split_target(target: str) -> tuple[str, str]:
    provider, _, model = target.partition("/")
    return provider, model


def substitute(target: str, captures: tuple[str, ...]) -> str:
    """Each ``*`` of ``target`` replaced by the matching capture (the last one reused)."""
    if "*" not in target or not captures:
        return target
    parts = target.split("*")
    out = [parts[0]]
    for i, rest in enumerate(parts[1:]):
        out.append(captures[min(i, len(captures) - 1)])
        out.append(rest)
    return "".join(out)


def compile_triggers(values: Any) -> frozenset[int | str]:
    """``[429, 5xx, timeout]`` as a set; statuses as ints (the schema allows only 429 and 5xx ones)."""
    return frozenset(int(v) if isinstance(v, int) or str(v).isdigit() else str(v) for v in values)


def triggered(on: frozenset[int | str], outcome: int | str, reason: str | None) -> bool:
    """Whether a provider's failure (its outcome and its codec's reason) moves on under ``on``."""
    if reason is not None and reason in on:
        return True
    if isinstance(outcome, int):
        if 400 <= outcome < 500 and outcome != 429:
            return False  # the client's request: another target would refuse it too
        return outcome in on or (outcome >= 500 and "5xx" in on)
    return outcome in on


@dataclass(frozen=True, slots=True)
class Target:
    """One provider and upstream model; ``rule`` says which mapping rule chose it."""

    provider: str
    model: str
    rule: str  # "exact:<key>", "wildcard:<pattern>", "default"

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"

    @property
    def primary(self) -> Target:
        """The target a request goes to first when nothing fails (a split: its heaviest arm's)."""
        return self

    def targets(self) -> Iterator[Target]:
        yield self

    def substituted(self, captures: tuple[str, ...], rule: str) -> Target:
        return Target(*split_target(substitute(self.name, captures)), rule=rule)

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Fallback:
    """An ordered list: the next entry is tried when the current one fails with an outcome in ``on``."""

    entries: tuple[Plan, ...]
    on: frozenset[int | str]
    rule: str

    @property
    def primary(self) -> Target:
        return self.entries[0].primary

    def targets(self) -> Iterator[Target]:
        for e in self.entries:
            yield from e.targets()

    def substituted(self, captures: tuple[str, ...], rule: str) -> Fallback:
        return Fallback(tuple(e.substituted(captures, rule) for e in self.entries), self.on, rule)

    def describe(self) -> str:
        entries = "[" + ", ".join(e.describe() for e in self.entries) + "]"
        return entries if self.on == DEFAULT_TRIGGERS else "{fallback: " + entries + _on_text(self.on) + "}"


@dataclass(frozen=True, slots=True)
class Arm:
    weight: int
    plan: Plan


@dataclass(frozen=True, slots=True)
class Split:
    """A weighted choice per request (sticky sessions: by a hash of the session id). An arm that fails
    with an outcome in ``on`` falls to the other arms, heaviest first, as the last resort."""

    arms: tuple[Arm, ...]
    on: frozenset[int | str]
    rule: str
    bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)  # cumulative weights
    spill: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)  # per arm: the others

    def __post_init__(self) -> None:
        object.__setattr__(self, "bounds", tuple(accumulate(a.weight for a in self.arms)))
        by_weight = sorted(range(len(self.arms)), key=lambda i: (-self.arms[i].weight, i))
        object.__setattr__(self, "spill", tuple(tuple(j for j in by_weight if j != i) for i in range(len(self.arms))))

    @property
    def total(self) -> int:
        return self.bounds[-1]

    @property
    def primary(self) -> Target:
        return max(self.arms, key=lambda a: a.weight).plan.primary  # the first of the heaviest

    def arm_at(self, point: int) -> int:
        """The arm whose share of ``[0, total)`` holds ``point``."""
        for i, bound in enumerate(self.bounds):
            if point < bound:
                return i
        return len(self.bounds) - 1

    def targets(self) -> Iterator[Target]:
        for a in self.arms:
            yield from a.plan.targets()

    def substituted(self, captures: tuple[str, ...], rule: str) -> Split:
        return Split(tuple(Arm(a.weight, a.plan.substituted(captures, rule)) for a in self.arms), self.on, rule)

    def describe(self) -> str:
        arms = ", ".join(f"{a.plan.describe()}: {a.weight}" for a in self.arms)
        return "{split: {" + arms + "}" + ("" if self.on == DEFAULT_TRIGGERS else _on_text(self.on)) + "}"


Plan = Target | Fallback | Split


def _on_text(on: frozenset[int | str]) -> str:
    return ", on: [" + ", ".join(sorted(map(str, on))) + "]"


def compile_plan(spec: Any, on: frozenset[int | str], rule: str) -> Plan:
    """A validated mapping target (string, list, ``{fallback}``, ``{split}``) as a plan; ``on``: the
    triggers of nodes that name none."""
    if isinstance(spec, str):
        return Target(*split_target(spec), rule=rule)
    if isinstance(spec, list):
        return Fallback(tuple(compile_plan(s, on, rule) for s in spec), on, rule)
    own = compile_triggers(spec["on"]) if "on" in spec else on
    if "fallback" in spec:
        return Fallback(tuple(compile_plan(s, on, rule) for s in spec["fallback"]), own, rule)
    return Split(tuple(Arm(w, compile_plan(s, on, rule)) for s, w in split_arms(spec["split"])), own, rule)


def split_arms(arms: Any) -> list[tuple[Any, Any]]:
    """(target spec, weight) of ``{provider/model: weight}`` or ``[{weight, target}]``."""
    if isinstance(arms, dict):
        return [(t, w) for t, w in arms.items()]
    return [(a.get("target"), a.get("weight")) for a in arms if isinstance(a, dict)]


def spec_targets(spec: Any, pointer: Pointer, depth: int = 1) -> Iterator[tuple[Pointer, str, int]]:
    """(pointer, ``provider/model``, depth) of every target string in a raw mapping target, read
    defensively (the schema reports wrong shapes). A split's map form is located at its key."""
    if isinstance(spec, str):
        yield pointer, spec, depth
        return
    for where, child in _children(spec, pointer):
        yield from spec_targets(child, where, depth + 1)


def _children(spec: Any, pointer: Pointer) -> list[tuple[Pointer, Any]]:
    """(pointer, spec) of a list's entries, a ``{fallback}``'s entries or a ``{split}``'s arms."""
    if isinstance(spec, list):
        return [((*pointer, i), s) for i, s in enumerate(spec)]
    if not isinstance(spec, dict):
        return []
    if isinstance(spec.get("fallback"), list):
        return [((*pointer, "fallback", i), s) for i, s in enumerate(spec["fallback"])]
    arms = spec.get("split")
    if isinstance(arms, dict):
        return [((*pointer, "split", t), t) for t in arms]
    if isinstance(arms, list):
        return [((*pointer, "split", i, "target"), a.get("target")) for i, a in enumerate(arms) if isinstance(a, dict)]
    return []
