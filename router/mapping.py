"""Model mapping: exact > wildcard > default, compiled once per snapshot.

Wildcard precedence is deterministic: the pattern with the most literal (non-``*``) characters wins,
ties go to the one declared first. Each ``*`` in a target is replaced by what the corresponding
``*`` of the pattern matched (the last capture is reused when the target has more stars).
"""

from __future__ import annotations

import re
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
    regex: re.Pattern[str]
    target: str
    literal: int
    order: int


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


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("(.*?)".join(re.escape(p) for p in pattern.split("*")) , re.DOTALL)


class ModelMapper:
    """Resolves a client model name; results are memoised (the mapping is pure per snapshot)."""

    CACHE_MAX = 4096

    def __init__(self, exact: dict[str, str], wildcard: dict[str, str], default: str | None):
        self.exact = dict(exact)
        self.default = default
        rules = [
            _Wildcard(p, wildcard_regex(p), t, len(p.replace("*", "")), i)
            for i, (p, t) in enumerate(wildcard.items())
        ]
        self.wildcards = sorted(rules, key=lambda w: (-w.literal, w.order))
        self._cache: dict[str, Target | None] = {}

    def resolve(self, model: str) -> Target | None:
        hit = self._cache.get(model, self)
        if hit is not self:
            return hit  # type: ignore[return-value]
        result = self._resolve(model)
        if len(self._cache) >= self.CACHE_MAX:
            self._cache.clear()
        self._cache[model] = result
        return result

    def _resolve(self, model: str) -> Target | None:
        target = self.exact.get(model)
        if target is not None:
            return Target(*split_target(target), rule=f"exact:{model}")
        for w in self.wildcards:
            m = w.regex.fullmatch(model)
            if m is not None:
                return Target(*split_target(substitute(w.target, m.groups())), rule=f"wildcard:{w.pattern}")
        if self.default:
            return Target(*split_target(self.default), rule="default")
        return None

    def client_models(self) -> list[str]:
        """Model names a client can ask for by name (exact keys), for /v1/models."""
        return list(self.exact)


def compile_mapping(section: dict[str, Any] | None) -> ModelMapper:
    section = section or {}
    return ModelMapper(section.get("exact") or {}, section.get("wildcard") or {}, section.get("default"))
