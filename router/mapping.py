"""Model mapping: exact > wildcard > default, compiled once per snapshot.

Wildcard precedence is deterministic: the pattern with the most literal (non-``*``) characters wins,
ties go to the one declared first. Each ``*`` in a target is replaced by what the corresponding
``*`` of the pattern matched (the last capture is reused when the target has more stars); in a
fallback list or a split every target of the tree is substituted. A resolved model is a plan
(:mod:`router.plan`): a single :class:`Target` (the common case), a :class:`Fallback` or a
:class:`Split`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.plan import DEFAULT_TRIGGERS, Plan, compile_plan, compile_triggers
from router.plan import Target as Target  # re-exported: callers and tests name it here


@dataclass(frozen=True, slots=True)
class _Wildcard:
    pattern: str
    parts: tuple[str, ...]  # the literal pieces between the stars
    target: Plan  # its targets' stars are substituted per model
    literal: int
    order: int

    def match(self, model: str) -> tuple[str, ...] | None:
        """What each ``*`` matched (shortest, leftmost: like a lazy ``(.*?)`` regex), or None."""
        parts = self.parts
        if len(parts) == 1:  # no star: a literal pattern
            return () if model == parts[0] else None
        head, tail = parts[0], parts[-1]
        end = len(model) - len(tail)
        if end < len(head) or not model.startswith(head) or not model.endswith(tail):
            return None
        pos, captures = len(head), []
        for piece in parts[1:-1]:
            at = model.find(piece, pos, end)
            if at < 0:
                return None
            captures.append(model[pos:at])
            pos = at + len(piece)
        captures.append(model[pos:end])
        return tuple(captures)


class ModelMapper:
    """Resolves a client model name; results are memoised (the mapping is pure per snapshot).

    Wildcards are indexed by their literal prefix (the text before the first ``*``): a lookup
    checks the model's prefixes of the few lengths that occur, so its cost follows the length of
    the name and the number of patterns sharing a prefix, not the number of rules.
    """

    CACHE_MAX = 4096

    def __init__(self, exact: dict[str, Any], wildcard: dict[str, Any], default: Any,
                 fallback_on: frozenset[int | str] = DEFAULT_TRIGGERS, session_header: str = "x-session-id"):
        """Targets as the config writes them (``provider/model``, a list, ``{fallback}``, ``{split}``);
        ``fallback_on``: the triggers of fallback lists and splits that name none; ``session_header``:
        the request header whose value keeps a session on one split arm."""
        self.fallback_on = fallback_on
        self.session_header = session_header
        self.exact: dict[str, Plan] = {m: compile_plan(t, fallback_on, f"exact:{m}") for m, t in exact.items()}
        self.default = compile_plan(default, fallback_on, "default") if default else None
        rules = [
            _Wildcard(p, tuple(p.split("*")), compile_plan(t, fallback_on, ""), len(p.replace("*", "")), i)
            for i, (p, t) in enumerate(wildcard.items())
        ]
        self.wildcards = sorted(rules, key=lambda w: (-w.literal, w.order))
        self._by_prefix: dict[str, list[_Wildcard]] = {}
        for w in self.wildcards:  # each bucket stays in precedence order
            self._by_prefix.setdefault(w.parts[0], []).append(w)
        self._prefix_lengths = sorted({len(p) for p in self._by_prefix})
        self._cache: dict[str, Plan | None] = {}

    def resolve(self, model: str) -> Plan | None:
        """The plan for a client model name: a :class:`Target` unless the entry is a fallback list
        or a split; None when nothing matches and there is no default."""
        try:
            return self._cache[model]  # a hit, the common case, costs no more than a get()
        except KeyError:
            pass
        result = self._resolve(model)
        if len(self._cache) >= self.CACHE_MAX:
            self._cache.clear()
        self._cache[model] = result
        return result

    def _resolve(self, model: str) -> Plan | None:
        target = self.exact.get(model)
        if target is not None:
            return target
        best: tuple[_Wildcard, tuple[str, ...]] | None = None
        for length in self._prefix_lengths:
            if length > len(model):
                break
            for w in self._by_prefix.get(model[:length], ()):
                if best is not None and (w.literal, -w.order) <= (best[0].literal, -best[0].order):
                    break  # the bucket is in precedence order: nothing after this can win
                captures = w.match(model)
                if captures is not None:
                    best = (w, captures)
                    break
        if best is not None:
            w, captures = best
            return w.target.substituted(captures, f"wildcard:{w.pattern}")
        return self.default

    def client_models(self) -> list[str]:
        """Model names a client can ask for by name (exact keys), for /v1/models."""
        return list(self.exact)


def compile_mapping(section: dict[str, Any] | None) -> ModelMapper:
    section = section or {}
    on = section.get("fallback_on")
    return ModelMapper(section.get("exact") or {}, section.get("wildcard") or {}, section.get("default"),
                       DEFAULT_TRIGGERS if on is None else compile_triggers(on),
                       section.get("session_header", "x-session-id"))
