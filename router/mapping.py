"""Model mapping: exact > wildcard > default, compiled once per snapshot.

Wildcard precedence is deterministic: the pattern with the most literal (non-``*``) characters wins,
ties go to the one declared first. Each ``*`` in a target is replaced by what the corresponding
``*`` of the pattern matched (the last capture is reused when the target has more stars).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str
    rule: str  # which rule matched: "exact:<key>", "wildcard:<pattern>", "default"


@dataclass(frozen=True, slots=True)
class _Wildcard:
    pattern: str
    parts: tuple[str, ...]  # the literal pieces between the stars
    target: str
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


def split_target(target: str) -> tuple[str, str]:
    provider, _, model = target.partition("/")
    return provider, model


def substitute(target: str, captures: tuple[str, ...]) -> str:
    if "*" not in target or not captures:
        return target
    parts = target.split("*")
    out = [parts[0]]
    for i, rest in enumerate(parts[1:]):
        out.append(captures[min(i, len(captures) - 1)])
        out.append(rest)
    return "".join(out)


class ModelMapper:
    """Resolves a client model name; results are memoised (the mapping is pure per snapshot).

    Wildcards are indexed by their literal prefix (the text before the first ``*``): a lookup
    checks the model's prefixes of the few lengths that occur, so its cost follows the length of
    the name and the number of patterns sharing a prefix, not the number of rules.
    """

    CACHE_MAX = 4096

    def __init__(self, exact: dict[str, str], wildcard: dict[str, str], default: str | None):
        self.exact = dict(exact)
        self.default = default
        rules = [
            _Wildcard(p, tuple(p.split("*")), t, len(p.replace("*", "")), i)
            for i, (p, t) in enumerate(wildcard.items())
        ]
        self.wildcards = sorted(rules, key=lambda w: (-w.literal, w.order))
        self._by_prefix: dict[str, list[_Wildcard]] = {}
        for w in self.wildcards:  # each bucket stays in precedence order
            self._by_prefix.setdefault(w.parts[0], []).append(w)
        self._prefix_lengths = sorted({len(p) for p in self._by_prefix})
        self._cache: dict[str, Target | None] = {}

    def resolve(self, model: str) -> Target | None:
        try:
            return self._cache[model]  # a hit, the common case, costs no more than a get()
        except KeyError:
            pass
        result = self._resolve(model)
        if len(self._cache) >= self.CACHE_MAX:
            self._cache.clear()
        self._cache[model] = result
        return result

    def _resolve(self, model: str) -> Target | None:
        target = self.exact.get(model)
        if target is not None:
            return Target(*split_target(target), rule=f"exact:{model}")
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
            return Target(*split_target(substitute(w.target, captures)), rule=f"wildcard:{w.pattern}")
        if self.default:
            return Target(*split_target(self.default), rule="default")
        return None

    def client_models(self) -> list[str]:
        """Model names a client can ask for by name (exact keys), for /v1/models."""
        return list(self.exact)


def compile_mapping(section: dict[str, Any] | None) -> ModelMapper:
    section = section or {}
    return ModelMapper(section.get("exact") or {}, section.get("wildcard") or {}, section.get("default"))
