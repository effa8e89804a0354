"""Retry policies: compiled from YAML, decided by a pure function the engine's loop calls.

An outcome is an upstream HTTP status or a transport failure name (``connect_error``, ``timeout``,
``reset``, ``malformed``). The first rule whose ``on`` list covers it decides: retry or not, rotate to
another account or stay, how long to wait (Retry-After / Gemini ``retryDelay``, a fixed duration or
exponential backoff with jitter) and how long the account cools down; an upstream's hint counts for at
most the policy's ``max_cooldown``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from ruamel.yaml import YAML

_DURATION = re.compile(r"\A(\d+(?:\.\d+)?)(ms|s|m|h)?\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, default: float | None = None) -> float | None:
    """Seconds from ``1.5``, ``"200ms"``, ``"2s"``, ``"1m"``; ``default`` for None."""
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value).strip())
    if not m:
        raise ValueError(f"bad duration {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    factor: float = 2.0
    max: float = 10.0
    jitter: float = 0.2  # +/- fraction

    def delay(self, attempt: int, rand: Callable[[], float]) -> float:
        base = min(self.max, self.initial * self.factor ** max(0, attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * rand() - 1)))


@dataclass(frozen=True, slots=True)
class Rule:
    on: frozenset[int | str]
    retry: bool = True
    rotate: bool = True
    wait: float | str | None = None  # seconds | "retry_after" | None
    backoff: Backoff | None = None
    cooldown: float | str | None = None  # seconds | "retry_after" | None

    def covers(self, outcome: int | str) -> bool:
        if outcome in self.on:
            return True
        if isinstance(outcome, int):
            return f"{outcome // 100}xx" in self.on
        return False


DEFAULT_MAX_COOLDOWN = 300.0


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    max_attempts: int
    max_wait: float
    rules: tuple[Rule, ...]
    # The longest an upstream's own hint (Retry-After, retry-after-ms, Gemini retryDelay) counts for:
    # one hostile or buggy answer must not rest an account, or the whole pool, for years.
    max_cooldown: float = DEFAULT_MAX_COOLDOWN

    def cap(self, hint: float | None) -> float | None:
        """An upstream's retry hint, at most ``max_cooldown``."""
        return hint if hint is None or hint <= self.max_cooldown else self.max_cooldown


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    rotate: bool = False
    wait: float = 0.0
    cooldown: float | None = None  # seconds the failing account rests


DEFAULT_COOLDOWN = 60.0

def decide(policy: Policy, attempt: int, outcome: int | str, retry_after: float | None,
           rand: Callable[[], float] = random.random) -> Decision:
    """What to do after attempt number ``attempt`` (1-based) ended with ``outcome``; ``retry_after`` is
    the upstream's hint, used up to the policy's ``max_cooldown``."""
    rule = next((r for r in policy.rules if r.covers(outcome)), None)
    if rule is None:
        return Decision(retry=False)
    retry_after = policy.cap(retry_after)
    cooldown: float | None = None
    if rule.cooldown == "retry_after":
        cooldown = retry_after if retry_after is not None else DEFAULT_COOLDOWN
    elif _seconds(rule.cooldown):
        cooldown = float(rule.cooldown)  # type: ignore[arg-type]  # _seconds() checked it is a number
    if not rule.retry:  # a rule may only cool the account down (e.g. a revoked key)
        return Decision(retry=False, rotate=rule.rotate, cooldown=cooldown)
    if rule.wait == "retry_after":
        wait = retry_after if retry_after is not None else (
            rule.backoff.delay(attempt, rand) if rule.backoff else 1.0)
    elif _seconds(rule.wait):
        wait = float(rule.wait)  # type: ignore[arg-type]  # _seconds() checked it is a number
    elif rule.backoff is not None:
        wait = rule.backoff.delay(attempt, rand)
    else:
        wait = 0.0
    # With rotation the next account need not wait for this one's Retry-After.
    if rule.rotate and rule.wait == "retry_after":
        wait = 0.0
    retry = attempt < policy.max_attempts and wait <= policy.max_wait
    return Decision(retry=retry, rotate=rule.rotate, wait=wait, cooldown=cooldown)


def _seconds(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _wait_value(v: Any) -> float | str | None:
    if v is None:
        return None
    if v == "retry_after":
        return "retry_after"
    return parse_duration(v)


def compile_policies(section: dict[str, Any] | None) -> dict[str, Policy]:
    """The ``retry_policies`` section by name; ``default`` is the shipped one unless the config writes its own."""
    return {"default": DEFAULT_POLICY, **{name: compile_policy(name, s) for name, s in (section or {}).items()}}


def compile_policy(name: str, section: dict[str, Any]) -> Policy:
    rules = []
    for r in section.get("rules") or []:
        b = r.get("backoff")
        backoff = None
        if b is not None:
            backoff = Backoff(parse_duration(b.get("initial"), 0.5) or 0.0, float(b.get("factor", 2.0)),
                              parse_duration(b.get("max"), 10.0) or 0.0, float(b.get("jitter", 0.2)))
        rules.append(Rule(
            on=frozenset(r["on"]), retry=bool(r.get("retry", True)), rotate=bool(r.get("rotate", False)),
            wait=_wait_value(r.get("wait")), backoff=backoff, cooldown=_wait_value(r.get("cooldown")),
        ))
    return Policy(name, int(section.get("max_attempts", 3)),
                  parse_duration(section.get("max_wait"), 30.0) or 0.0, tuple(rules),
                  parse_duration(section.get("max_cooldown"), DEFAULT_MAX_COOLDOWN) or 0.0)


SHIPPED_RETRY_FILE = "40-retry.yaml"


def _shipped_default() -> Policy:
    """``retry_policies.default`` of the shipped config (``routes.d/40-retry.yaml``), the one place the
    default policy is written: a provider whose config names no policy and defines no ``default`` uses it."""
    text = (files("router") / "routes.d" / SHIPPED_RETRY_FILE).read_text(encoding="utf-8")
    return compile_policy("default", YAML(typ="safe").load(text)["retry_policies"]["default"])


DEFAULT_POLICY = _shipped_default()
