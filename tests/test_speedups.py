"""router/_speedups.c against the Python it replaces (router.limit_cells, router.limit_headers,
router.token_estimate): the same results to the last bit on random sequences, and the same errors.

The extension is optional for users (a machine without a C compiler runs the Python); CI builds it,
so under ``CI=true`` a missing build fails here instead of skipping.
"""

from __future__ import annotations

import math
import os
import random
from types import ModuleType
from typing import Any

import pytest

from router import limit_cells, speedups
from router.canonical import CanonicalRequest
from router.limit_headers import python_go_duration, python_openai_headers
from router.limits import Cell, Limiter, LimitPlan, over
from router.token_estimate import python_estimate_tokens


@pytest.fixture(scope="module")
def c() -> ModuleType:
    compiled = speedups.compiled()
    if compiled is None:
        if os.environ.get("CI") == "true":
            pytest.fail("router._speedups was not built (pip install -e . compiles it; is a C compiler there?)")
        pytest.skip("router._speedups is not built here (no C compiler at install time)")
    return compiled


def test_the_limiter_uses_the_compiled_cells_when_built(c: ModuleType) -> None:
    assert limit_cells.CELLS is c
    assert Limiter().cells is c


def test_router_no_extensions_turns_them_off(monkeypatch: pytest.MonkeyPatch, c: ModuleType) -> None:
    monkeypatch.setenv("ROUTER_NO_EXTENSIONS", "1")
    assert speedups.compiled() is None
    monkeypatch.setenv("ROUTER_NO_EXTENSIONS", "0")
    assert speedups.compiled() is c


def test_a_counter_starts_empty_and_takes_no_arguments(c: ModuleType) -> None:
    counter = c.Counter()
    assert (counter.tat, counter.inflight) == (0.0, 0)
    counter.tat, counter.inflight = 1.5, 3
    assert (counter.tat, counter.inflight) == (1.5, 3)
    with pytest.raises(TypeError):
        c.Counter(1)
    with pytest.raises(AttributeError):
        counter.other = 1  # type: ignore[attr-defined]


# --- the cells: random sequences through both, compared after every step ------------------------

def _plan(rng: random.Random) -> LimitPlan:
    cells = [Cell("key", "k", kind, rng.choice((1, 2, 3, 5, 60, 1000, 6_000_000_000)))
             for kind in ("rpm", "tpm") for _ in range(rng.randint(0, 2))]
    cells += [Cell("team", "t", "concurrency", rng.randint(1, 3)) for _ in range(rng.randint(0, 2))]
    return LimitPlan(tuple(x for x in cells if x.kind != "concurrency"),
                     tuple(x for x in cells if x.kind == "concurrency"))


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as e:  # noqa: BLE001 - the outcome compared is the error's type and text
        return type(e).__name__, (str(e), getattr(e, "retry_after", None))


def _state(limiter: Limiter, plan: LimitPlan) -> list[tuple[float, int]]:
    b = limiter.bound(plan)
    return [(counter.tat, counter.inflight) for counter, *_ in (*b.rates, *b.slots)]


def test_admit_take_settle_match_the_python_cells(c: ModuleType) -> None:
    seen: set[str] = set()
    for seed in range(60):
        seen |= _compare_cells(c, random.Random(seed))
    assert seen == {"ok", "GatewayError"}  # admitted and refused, both compared


def _compare_cells(c: ModuleType, rng: random.Random) -> set[str]:
    plan = _plan(rng)
    now = [1000.0]
    fast, slow = (Limiter(clock=lambda: now[0], cells=cells) for cells in (c, limit_cells.PYTHON))
    held: list[tuple[Any, Any]] = []
    outcomes: set[str] = set()
    for _ in range(300):
        step = rng.random()
        tokens = rng.choice((0, 1, 2, 7, 50, 999, 10**7, 10**30, -5))
        if step < 0.45:
            a = _outcome(lambda t=tokens: fast.admit(plan, t))
            b = _outcome(lambda t=tokens: slow.admit(plan, t))
            assert (a[0], a[0] == "ok" or a[1]) == (b[0], b[0] == "ok" or b[1])
            outcomes.add(a[0])
            if a[0] == "ok":
                assert a[1].status == b[1].status
                held.append((a[1], b[1]))
        elif step < 0.6:
            assert _outcome(lambda t=tokens: fast.take(plan, t)) == _outcome(lambda t=tokens: slow.take(plan, t))
        elif step < 0.85 and held:
            pa, pb = held.pop(rng.randrange(len(held)))
            used = rng.choice((None, 0, 3, 500, 10**9))
            fast.settle(pa, used)
            slow.settle(pb, used)
        else:
            now[0] += rng.choice((0.0, 1e-6, 0.013, 0.5, 1.0, 7.3, 61.0))
        assert _state(fast, plan) == _state(slow, plan)
    return outcomes


def test_a_429_names_the_same_cell_and_wait_and_gives_everything_back(c: ModuleType) -> None:
    plan = LimitPlan((Cell("key", "k", "rpm", 2), Cell("team", "t", "tpm", 100)), (Cell("key", "k", "concurrency", 5),))
    for cells in (c, limit_cells.PYTHON):
        limiter = Limiter(clock=lambda: 50.0, cells=cells)
        limiter.admit(plan, 60)
        before = _state(limiter, plan)
        with pytest.raises(Exception) as over_tpm:
            limiter.admit(plan, 60)
        assert "tpm limit" in str(over_tpm.value)
        assert _state(limiter, plan) == before


def test_malformed_cells_are_type_errors_not_crashes(c: ModuleType) -> None:
    with pytest.raises(TypeError):
        c.take(((object(), 1.0, True, 1, None),), 1, 0.0, over)
    with pytest.raises(TypeError):
        c.take(("not a tuple",), 1, 0.0, over)
    with pytest.raises(TypeError):
        c.release((("x",),))
    with pytest.raises(TypeError):
        c.admit((), [], 1, 0.0, over)
    counter = c.Counter()
    with pytest.raises(TypeError):  # every cell is checked before any is taken: nothing was
        c.take(((counter, 12.0, True, 5, None), (counter, "x", True, 5, None)), 1, 10.0, over)
    assert counter.tat == 0.0
    assert c.take(((counter, 12.0, True, 5, None),), 1, 10.0, over)[0] == (5, 4, 12.0)


# --- the headers -----------------------------------------------------------------------------

EDGES = [0.0, -0.0, -1.0, 1e-9, 0.0005, 0.0015, 0.0025, 0.006, 0.9994, 0.9995, 0.9999, 1.0, 1.0005, 1.5,
         20.0, 59.9995, 60.0, 61.25, 3599.9995, 3600.0, 3723.0, 7199.9994, 86_400.5, 1e12, 9.007e12, 1e20, 1e300]


def test_go_duration_matches_the_python_one(c: ModuleType) -> None:
    rng = random.Random(7)
    values = [*EDGES, *(rng.uniform(0, 2) for _ in range(5000)), *(rng.uniform(0, 1e6) for _ in range(5000)),
              *(rng.randint(0, 10**7) / 1000 for _ in range(5000)),  # whole milliseconds
              *(rng.randint(0, 10**6) / 2000 for _ in range(2000)),  # halves of one: rounded to even
              0, 1, 90, 10**30]
    for value in values:
        assert c.go_duration(value) == python_go_duration(value), value


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_go_duration_fails_as_the_python_one_does(c: ModuleType, value: float) -> None:
    with pytest.raises(Exception) as python_error:
        python_go_duration(value)
    with pytest.raises(type(python_error.value)):
        c.go_duration(value)


def test_openai_headers_match_the_python_ones(c: ModuleType) -> None:
    rng = random.Random(3)

    def window() -> tuple[int, int, float] | None:
        if rng.random() < 0.25:
            return None
        return (rng.choice((1, 60, 6_000_000_000, 10**25)), rng.randint(0, 10**10), rng.uniform(0, 120))

    for _ in range(3000):
        status = (window(), window())
        produced = c.openai_headers(status)
        assert produced == python_openai_headers(status)
        assert list(produced) == list(python_openai_headers(status))  # the same order on the wire


# --- the token estimate ------------------------------------------------------------------------

def _request(rng: random.Random) -> CanonicalRequest:
    def text() -> str:
        return "".join(rng.choice("ab é漢🙂") for _ in range(rng.randint(0, 40)))

    def part() -> Any:
        return rng.choice([
            {"type": "text", "text": text()}, {"type": "text", "text": None}, {"type": "text"},
            {"type": "image", "data": "x"}, {"type": "tool_call", "name": "f", "arguments": "{}"},
            {"type": "tool_result", "content": text()}, {"type": "thinking", "text": text()}, "not a part",
            {"type": "text", "text": 5},
        ])

    def content() -> Any:
        return rng.choice([text(), None, [], [part() for _ in range(rng.randint(1, 3))],
                           [{"type": "text", "text": text()} for _ in range(rng.randint(1, 3))]])

    messages = [{"role": "user", "content": content()} if rng.random() < 0.9 else {"role": "user"}
                for _ in range(rng.randint(0, 4))]
    tools = rng.choice([None, [], [{"name": "f", "parameters": {"type": "object"}}]])
    return CanonicalRequest(model="m", messages=messages, system=rng.choice([None, "", text()]), tools=tools)


def test_the_estimate_matches_the_python_one(c: ModuleType) -> None:
    rng = random.Random(11)
    for _ in range(4000):
        req = _request(rng)
        assert _outcome(lambda r=req: c.estimate_tokens(r)) == _outcome(lambda r=req: python_estimate_tokens(r)), req


def test_without_the_extension_the_python_serves() -> None:
    import subprocess
    import sys
    code = ("from router import limit_cells, limit_headers, token_estimate; from router.limits import Limiter; "
            "assert Limiter().cells is limit_cells.PYTHON; "
            "assert limit_headers.openai_headers is limit_headers.python_openai_headers; "
            "assert token_estimate.estimate_tokens is token_estimate.python_estimate_tokens; print('python')")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ROUTER_NO_EXTENSIONS": "1"},
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "python"


# --- the budgets -------------------------------------------------------------------------------

def test_budget_checks_and_charges_match_the_python_ones(c: ModuleType) -> None:
    from router import budget_cells
    rng = random.Random(5)
    ids = ["key:a:day", "team:t:month", "key:b:week"]
    seen = set()
    for _ in range(200):
        bounds = tuple((i, rng.choice((50, 10**12, 1 << 62)), rng.choice((1000, 1 << 62)))
                       for i in rng.sample(ids, rng.randint(0, 3)))
        fast: dict[str, list[int]] = {}
        slow: dict[str, list[int]] = {}
        for _ in range(30):
            tokens, nano = rng.choice((0, 1, 17, 10**13)), rng.choice((0, 5, 999, 10**20))
            c.add(bounds, fast, tokens, nano)
            budget_cells.PYTHON.add(bounds, slow, tokens, nano)
            assert fast == slow
            over = c.reached(bounds, fast)
            assert over is budget_cells.PYTHON.reached(bounds, slow)
            seen.add(over)
    assert seen == {True, False}
    with pytest.raises(TypeError):
        c.reached((("id", 1, 1),), {"id": (0, 0)})
    with pytest.raises(TypeError):
        c.add((("id", 1, 1),), {"id": "no"}, 1, 1)


# --- what the review of the extension found: each case as the Python does it --------------------

def test_values_past_a_long_long_are_the_python_ones(c: ModuleType) -> None:
    for tokens, limit in ((2**64 - 1, 10**19), (10**19, 2**63 + 2**40), (2**70, 5), (3, 2**64)):
        cells = [((counter := kind.Counter()), 60.0 / limit, False, limit, "cell") for kind in (c, limit_cells.PYTHON)]
        results = [_outcome(lambda m=m, cell=cell, t=tokens: m.take((cell,), t, 1.0, over))
                   for m, cell in zip((c, limit_cells.PYTHON), cells, strict=True)]
        assert results[0] == results[1]
        assert cells[0][0].tat == cells[1][0].tat
    assert counter.tat > 0  # the last pair was taken


def test_settle_corrects_only_a_true_delta_and_adjust_without_cells_converts_nothing(c: ModuleType) -> None:
    for delta in (0, 0.0, None, False):
        counter = c.Counter()
        counter.tat = 5.0
        c.settle((), ((counter, 1.0),), delta, 1.0)
        assert counter.tat == 5.0
    assert c.adjust((), 10**400, 1.0) is None is limit_cells.PYTHON.adjust((), 10**400, 1.0)
    counter = c.Counter()
    c.settle((), ((counter, 0.5),), 4, 1.0)
    assert counter.tat == 3.0


def test_arguments_are_never_spread_into_the_python_fallback(c: ModuleType) -> None:
    with pytest.raises(TypeError):
        c.go_duration((1.5,))
    with pytest.raises(TypeError):
        c.openai_headers(((1, 2, (0.5,)), None))
    with pytest.raises(AttributeError):
        c.estimate_tokens(())


def test_subclasses_are_counted_as_python_counts_them(c: ModuleType) -> None:
    class Long(str):
        def __len__(self) -> int:
            return 1000

    req = CanonicalRequest(model="m", messages=[{"role": "user", "content": Long("hi")}])
    assert c.estimate_tokens(req) == python_estimate_tokens(req) == 254


def test_an_over_that_returns_an_exception_class_is_raised_as_python_raises_it(c: ModuleType) -> None:
    counter = c.Counter()
    with pytest.raises(KeyError):
        c.admit(((counter, 0, "cell"),), (), 1, 1.0, lambda cell, wait: KeyError)


def test_budget_spend_changed_by_its_own_arithmetic_is_no_crash(c: ModuleType) -> None:
    class Sneaky(int):
        def __ge__(self, other: object) -> bool:
            spent.clear()
            return False

        def __iadd__(self, other: object) -> int:
            spent.clear()
            return 1

    spent: dict[str, list[int]] = {"id": [Sneaky(1), Sneaky(2)]}
    assert c.reached((("id", 5, 5),), spent) is False
    spent = {"id": [Sneaky(1), Sneaky(2)]}
    c.add((("id", 5, 5),), spent, 1, 1)
    assert spent == {}
