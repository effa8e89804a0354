"""router.retry: the pure retry decision, policy compilation and durations."""

from __future__ import annotations

from typing import Any

import pytest

from router.retry import (
    DEFAULT_COOLDOWN,
    DEFAULT_MAX_COOLDOWN,
    DEFAULT_POLICY,
    Backoff,
    Decision,
    Policy,
    Rule,
    compile_policy,
    decide,
    parse_duration,
)

SHIPPED = compile_policy("default", {
    "max_attempts": 3,
    "max_wait": "30s",
    "rules": [
        {"on": [429], "rotate": True, "wait": "retry_after", "cooldown": "retry_after"},
        {"on": [500, 502, 504, "connect_error", "timeout"], "rotate": True, "wait": "200ms"},
        {"on": [503, 529], "rotate": False, "backoff": {"initial": "1s", "factor": 2, "max": "10s", "jitter": 0}},
    ],
})


def mid() -> float:
    return 0.5  # jitter factor 1 + j * (2 * 0.5 - 1) = 1


@pytest.mark.parametrize(("attempt", "outcome", "retry_after", "decision"), [
    (1, 429, 12.0, Decision(retry=True, rotate=True, wait=0.0, cooldown=12.0)),
    (1, 429, None, Decision(retry=True, rotate=True, wait=0.0, cooldown=DEFAULT_COOLDOWN)),
    (1, 429, 3600.0, Decision(retry=True, rotate=True, wait=0.0, cooldown=300.0)),  # max_cooldown
    (3, 429, 1.0, Decision(retry=False, rotate=True, wait=0.0, cooldown=1.0)),
    (1, 503, None, Decision(retry=True, rotate=False, wait=1.0)),
    (2, 503, None, Decision(retry=True, rotate=False, wait=2.0)),
    (2, 529, None, Decision(retry=True, rotate=False, wait=2.0)),
    (3, 503, None, Decision(retry=False, rotate=False, wait=4.0)),
    (1, 500, None, Decision(retry=True, rotate=True, wait=0.2)),
    (2, "connect_error", None, Decision(retry=True, rotate=True, wait=0.2)),
    (1, "timeout", None, Decision(retry=True, rotate=True, wait=0.2)),
    (1, 400, None, Decision(retry=False)),
    (1, 401, None, Decision(retry=False)),
    (1, 404, None, Decision(retry=False)),
    (1, 501, None, Decision(retry=False)),
    (1, "reset", None, Decision(retry=False)),
], ids=["429-rotates-cools", "429-default-cooldown", "429-long-retry-after-capped-still-rotates",
        "429-last-attempt", "503-backoff-stays", "503-backoff-grows", "529", "503-max-attempts",
        "500-fixed-wait", "connect-error", "timeout", "400-not-retried", "401-not-retried", "404-not-retried",
        "unlisted-5xx", "unlisted-transport"])
def test_shipped_policy(attempt: int, outcome: int | str, retry_after: float | None, decision: Decision) -> None:
    assert decide(SHIPPED, attempt, outcome, retry_after, rand=mid) == decision


def test_backoff_is_capped_at_max() -> None:
    assert decide(SHIPPED, 10, 503, None, rand=mid).wait == 10.0


def test_max_attempts_bounds_every_rule() -> None:
    policy = Policy("p", 2, 30.0, (Rule(frozenset({"5xx"}), rotate=False, wait=0.1),))
    assert [decide(policy, a, 500, None).retry for a in (1, 2, 3)] == [True, False, False]


@pytest.mark.parametrize(("retry_after", "retry"), [(5.0, True), (30.0, True), (31.0, False)],
                         ids=["short", "at-bound", "beyond"])
def test_max_wait_bounds_staying_on_one_account(retry_after: float, retry: bool) -> None:
    policy = Policy("p", 5, 30.0, (Rule(frozenset({429}), rotate=False, wait="retry_after"),))
    d = decide(policy, 1, 429, retry_after)
    assert d.retry is retry and d.wait == retry_after and d.rotate is False


@pytest.mark.parametrize(("on", "outcome", "covered"), [
    ({"5xx"}, 500, True), ({"5xx"}, 599, True), ({"5xx"}, 429, False), ({"4xx"}, 429, True),
    ({"4xx"}, 503, False), ({503}, 503, True), ({"5xx"}, "timeout", False), ({"timeout"}, "timeout", True),
], ids=["5xx-500", "5xx-599", "5xx-not-429", "4xx-429", "4xx-not-503", "exact", "class-not-transport",
        "transport"])
def test_status_class_matching(on: set[int | str], outcome: int | str, covered: bool) -> None:
    assert Rule(frozenset(on)).covers(outcome) is covered


def test_first_covering_rule_decides() -> None:
    policy = compile_policy("p", {"rules": [{"on": [502], "retry": False}, {"on": ["5xx"], "rotate": True}]})
    assert decide(policy, 1, 502, None) == Decision(retry=False)
    assert decide(policy, 1, 500, None) == Decision(retry=True, rotate=True, wait=0.0)


def test_no_retry_rule_can_still_cool_the_account() -> None:
    policy = compile_policy("p", {"rules": [{"on": [401, 403], "retry": False, "rotate": True, "cooldown": "5m"}]})
    assert decide(policy, 1, 401, None) == Decision(retry=False, rotate=True, cooldown=300.0)


def test_integer_durations_on_hand_built_rules() -> None:
    policy = Policy("p", 3, 30.0, (Rule(frozenset({500}), rotate=False, wait=2, cooldown=7),))
    assert decide(policy, 1, 500, None) == Decision(retry=True, rotate=False, wait=2.0, cooldown=7.0)


def test_retry_after_wait_without_header_falls_back_to_backoff() -> None:
    policy = Policy("p", 3, 30.0, (Rule(frozenset({429}), rotate=False, wait="retry_after",
                                        backoff=Backoff(3.0, 2.0, 10.0, 0.0)),))
    assert decide(policy, 1, 429, None).wait == 3.0
    assert decide(policy, 1, 429, 4.5).wait == 4.5


@pytest.mark.parametrize("r", [0.0, 0.25, 0.75, 1.0], ids=["low", "lowish", "highish", "high"])
def test_backoff_jitter_stays_within_bounds(r: float) -> None:
    b = Backoff(1.0, 2.0, 10.0, 0.2)
    assert 0.8 * 4 <= b.delay(3, lambda: r) <= 1.2 * 4


def test_default_policy_matches_design() -> None:
    assert DEFAULT_POLICY.max_attempts == 3 and DEFAULT_POLICY.max_wait == 30.0
    assert decide(DEFAULT_POLICY, 1, 429, 9.0) == Decision(retry=True, rotate=True, wait=0.0, cooldown=9.0)
    assert decide(DEFAULT_POLICY, 1, "malformed", None).retry is True
    assert decide(DEFAULT_POLICY, 1, 418, None) == Decision(retry=False)


def test_compile_policy_defaults() -> None:
    p = compile_policy("x", {"rules": [{"on": [429]}]})
    assert (p.name, p.max_attempts, p.max_wait) == ("x", 3, 30.0)
    assert p.rules == (Rule(frozenset({429}), retry=True, rotate=False, wait=None, backoff=None, cooldown=None),)


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), (1.5, 1.5), (2, 2.0), ("200ms", 0.2), ("2s", 2.0), ("1.5s", 1.5), ("3m", 180.0),
    ("1h", 3600.0), ("10", 10.0), (" 5s ", 5.0),
], ids=["none", "float", "int", "ms", "s", "fractional", "m", "h", "bare-string", "padded"])
def test_parse_duration(value: Any, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "s", "5 s", "5sec", "-1s", "1d", "abc", True],
                         ids=["empty", "unit-only", "space", "word-unit", "negative", "days", "word", "bool"])
def test_parse_duration_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(value)


def test_parse_duration_default() -> None:
    assert parse_duration(None, 7.0) == 7.0


@pytest.mark.parametrize(("retry_after", "cooldown"), [
    (12.0, 12.0), (300.0, 300.0), (1e9, 300.0), (1e305, 300.0), (float("inf"), 300.0), (None, DEFAULT_COOLDOWN),
], ids=["short", "at-cap", "31-years", "1e305", "infinite", "absent"])
def test_upstream_hints_are_capped_by_max_cooldown(retry_after: float | None, cooldown: float) -> None:
    assert DEFAULT_POLICY.max_cooldown == DEFAULT_MAX_COOLDOWN == 300.0
    assert decide(DEFAULT_POLICY, 1, 429, retry_after).cooldown == cooldown
    assert decide(SHIPPED, 1, 429, retry_after).cooldown == cooldown


def test_max_cooldown_caps_waits_too_and_compiles() -> None:
    policy = compile_policy("p", {"max_wait": "1m", "max_cooldown": "20s", "rules": [
        {"on": [429], "rotate": False, "wait": "retry_after", "cooldown": "retry_after"},
        {"on": [401], "retry": False, "cooldown": "1h"}]})
    assert policy.max_cooldown == 20.0
    assert decide(policy, 1, 429, 1e9) == Decision(retry=True, rotate=False, wait=20.0, cooldown=20.0)
    assert decide(policy, 1, 429, 5.0) == Decision(retry=True, rotate=False, wait=5.0, cooldown=5.0)
    # a duration the config states is the operator's own: only the upstream's hints are capped
    assert decide(policy, 1, 401, 1e9).cooldown == 3600.0
    assert policy.cap(None) is None and policy.cap(25.0) == 20.0
