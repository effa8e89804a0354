"""router.scheduling: weighted round robin, least_busy and p2c, on their own (an injected clock and a
seeded random source) and through the gateway against the simulator's faults."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from router.accounts import Account, Pool, StateStore
from router.failures import UpstreamFailure
from router.scheduling import account_failed, score
from tests.conftest import FAST_RETRY, Harness, start_gateway

STRATEGIES = ["round_robin", "sticky", "least_busy", "p2c"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def accounts(*weights: int) -> tuple[Account, ...]:
    return tuple(Account("p", chr(ord("a") + i), f"{chr(ord('a') + i)}@x", f"k{i}", w) for i, w in enumerate(weights))


def picks(pool: Pool, store: StateStore, n: int, exclude: set[str] | None = None) -> list[str | None]:
    out = []
    for _ in range(n):
        acc = pool.pick(store, "m", None, exclude or set()).account
        out.append(acc.id if acc else None)
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> StateStore:
    return StateStore(clock, random.Random(14))


# --- round robin ----------------------------------------------------------------------------------


def test_weighted_round_robin_is_smooth_and_exact(store: StateStore) -> None:
    pool = Pool("p", accounts(3, 1), "round_robin")
    assert picks(pool, store, 8) == ["a", "a", "b", "a", "a", "a", "b", "a"]


def test_weighted_round_robin_shares_follow_weights_and_skip_cooling(store: StateStore) -> None:
    accs = accounts(5, 1, 1)
    pool = Pool("p", accs, "round_robin")
    assert picks(pool, store, 7) == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's example sequence
    store.cool(accs[0], 30, None, "429")
    assert Counter(picks(pool, store, 10)) == {"b": 5, "c": 5}


def test_equal_weights_keep_the_plain_rotation(store: StateStore) -> None:
    pool = Pool("p", accounts(2, 2, 2), "round_robin")
    assert picks(pool, store, 4) == ["a", "b", "c", "a"]


def test_sticky_binds_new_sessions_by_weight(store: StateStore) -> None:
    pool = Pool("p", accounts(3, 1), "sticky")
    bound = [pool.pick(store, "m", f"s{i}", set()).account for i in range(8)]
    assert [a.id for a in bound if a] == ["a", "a", "b", "a", "a", "a", "b", "a"]
    assert [pool.pick(store, "m", f"s{i}", set()).account for i in range(8)] == bound  # and they stay


# --- least_busy -----------------------------------------------------------------------------------


def test_least_busy_takes_the_fewest_in_flight(store: StateStore) -> None:
    accs = accounts(1, 1, 1)
    pool = Pool("p", accs, "least_busy")
    assert picks(pool, store, 6) == ["a", "b", "c", "a", "b", "c"]  # all idle: in rotation
    store.state(accs[0].state_key).in_flight += 1
    store.state(accs[1].state_key).in_flight += 1
    assert picks(pool, store, 3) == ["c", "c", "c"]
    store.state(accs[2].state_key).in_flight += 1
    store.state(accs[2].state_key).in_flight += 1
    assert sorted(picks(pool, store, 4)) == ["a", "a", "b", "b"]  # a: 1 in flight, b: 1, c: 2


def test_least_busy_shares_by_weight_while_idle(store: StateStore) -> None:
    pool = Pool("p", accounts(3, 1), "least_busy")
    assert picks(pool, store, 8) == ["a", "a", "b", "a", "a", "a", "b", "a"]


def test_least_busy_divides_by_weight(store: StateStore) -> None:
    accs = accounts(4, 1)
    pool = Pool("p", accs, "least_busy")
    chosen = []
    for _ in range(10):  # each pick stays in flight: the load spreads 4:1
        acc = pool.pick(store, "m", None, set()).account
        assert acc is not None
        store.state(acc.state_key).in_flight += 1
        chosen.append(acc.id)
    assert Counter(chosen) == {"a": 8, "b": 2}


# --- p2c --------------------------------------------------------------------------------------------


def test_p2c_draws_by_weight_when_scores_tie(store: StateStore) -> None:
    pool = Pool("p", accounts(3, 1), "p2c")
    share = Counter(picks(pool, store, 4000))["a"] / 4000
    assert 0.72 < share < 0.78  # the first drawn wins a tie: P(a) = 3/4


def share_under_load(pool: Pool, store: StateStore, n: int, seed: int) -> Counter[str]:
    """Who ``n`` picks go to while every account holds 0 to 3 attempts in flight (seeded)."""
    rng = random.Random(seed)
    chosen: Counter[str] = Counter()
    for _ in range(n):
        for acc in pool.accounts:
            store.state(acc.state_key).in_flight = rng.randrange(4)
        got = pool.pick(store, "m", None, set()).account
        assert got is not None
        chosen[got.id] += 1
    return chosen


def test_p2c_avoids_an_account_that_fails(store: StateStore, clock: Clock) -> None:
    """Four equal accounts under a steady load. Healthy, each serves about a quarter of the picks;
    once a has failed 2 of its last 10 attempts (an error rate of 2/11) it wins only against a
    busier account while idle itself: 1/2 (drawn) x 1/4 (idle) x 1/2 (the other holds 2 or 3)
    = 6.25 % of the picks. Seeded: the same numbers every run; each bound is over 3.5 sigma away."""
    pool = Pool("p", accounts(1, 1, 1, 1), "p2c")
    fair = share_under_load(pool, store, 2000, seed=7)
    assert all(430 < fair[k] < 570 for k in "abcd"), fair
    for failed in (True, False, False, False, False, True, False, False, False, False):
        store.state("p/a").outcome(failed, clock())
    assert store.state("p/a").error_rate(clock()) == pytest.approx(2 / 11)
    avoided = share_under_load(pool, store, 2000, seed=8)
    assert 70 < avoided["a"] < 190, avoided
    assert all(avoided[k] > 570 for k in "bcd"), avoided


def test_p2c_lets_an_account_back_once_its_errors_fade(store: StateStore, clock: Clock) -> None:
    accs = accounts(1, 1)
    pool = Pool("p", accs, "p2c")
    for _ in range(10):
        store.state("p/a").outcome(True, clock())
    assert picks(pool, store, 20).count("a") == 0
    clock.now += 70  # about a minute without attempts: its rate fades below 1 % and reads as 0
    assert store.state("p/a").error_rate(clock()) == 0.0
    assert 5 < picks(pool, store, 40).count("a") < 35


def test_error_rate_decays_and_score_combines_load_and_errors(store: StateStore, clock: Clock) -> None:
    acc = accounts(2)[0]
    st = store.state(acc.state_key)
    assert st.error_rate(clock()) == 0.0 and score(acc, st, clock()) == 1.0
    st.outcome(True, clock())
    assert st.error_rate(clock()) == pytest.approx(0.5)  # one failure, one success assumed beside it
    for _ in range(3):
        st.outcome(False, clock())
    assert st.error_rate(clock()) == pytest.approx(1 / 5)
    clock.now += 10  # one window later the failure weighs e^-1 as much, and so do the successes
    assert st.error_rate(clock()) == pytest.approx(0.3679 / (4 * 0.3679 + 1), rel=1e-3)
    st.in_flight = 3
    assert score(acc, st, clock()) == pytest.approx((1 + 3 / 2) * (1 + 9 * st.error_rate(clock())))
    store.reset(acc.state_key)
    assert st.error_rate(clock()) == 0.0 and st.in_flight == 3  # a reset forgets errors, not attempts


def test_client_faults_do_not_count_against_the_account() -> None:
    assert account_failed(UpstreamFailure(500, "x")) and account_failed(UpstreamFailure(429, "x"))
    assert account_failed(UpstreamFailure("timeout", "x")) and account_failed(UpstreamFailure(401, "x"))
    assert not account_failed(UpstreamFailure(400, "x")) and not account_failed(UpstreamFailure(422, "x"))


# --- every strategy -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduling", STRATEGIES)
def test_cooling_and_excluded_accounts_are_never_picked(store: StateStore, clock: Clock, scheduling: str) -> None:
    accs = accounts(5, 1, 1)
    pool = Pool("p", accs, scheduling)
    store.cool(accs[0], 30, None, "429")
    store.cool(accs[1], 20, "m", "quota")  # for this model only
    assert set(picks(pool, store, 50)) == {"c"}
    assert set(picks(pool, store, 20, exclude={"p/c"})) == {None}
    pick = pool.pick(store, "m", None, {"p/c"})
    assert pick.account is None and pick.wait == pytest.approx(20.0)
    assert set(picks(pool, store, 50, exclude={"p/b"})) == {"c"}
    clock.now += 31
    assert set(picks(pool, store, 60)) == {"a", "b", "c"}


@pytest.mark.parametrize("scheduling", STRATEGIES)
def test_an_empty_pool_picks_nothing(store: StateStore, scheduling: str) -> None:
    assert Pool("p", (), scheduling).pick(store, "m", None, set()) == Pool("p", (), "p2c").pick(store, "m", None, set())


# --- through the gateway and the simulator ----------------------------------------------------------

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
KEYS = {"sim-a@simulator.local": "sim-key-a", "sim-b@simulator.local": "sim-key-b",
        "sim-c@simulator.local": "sim-key-c"}

PROVIDERS = """
providers:
  gemini:
    dialect: gemini
    base_url: builtin:simulator
    template: gemini
    scheduling: {scheduling}
    timeouts: {{first_byte: 5, idle: 5, total: 20}}
    accounts:
      - {{email: sim-a@simulator.local, api_key: sim-key-a, weight: {weight}}}
      - {{email: sim-b@simulator.local, api_key: sim-key-b}}
      - {{email: sim-c@simulator.local, api_key: sim-key-c}}
  openai: {{dialect: openai, base_url: builtin:simulator, template: openai, accounts: [{{api_key: sim-key-o}}]}}
  anthropic: {{dialect: anthropic, base_url: builtin:simulator, template: anthropic, accounts: [{{api_key: k}}]}}
"""


async def _harness(config_dir: Path, scheduling: str, weight: int = 1) -> Harness:
    (config_dir / "10-providers.yaml").write_text(PROVIDERS.format(scheduling=scheduling, weight=weight))
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    return await start_gateway(config_dir)


async def admin_accounts(h: Harness) -> dict[str, dict]:
    async with h.session.get(h.url + "/admin/accounts") as r:
        assert r.status == 200
        return {a["email"]: a for a in (await r.json())["accounts"] if a["provider"] == "gemini"}


async def test_least_busy_routes_around_a_long_stream(config_dir: Path) -> None:
    h = await _harness(config_dir, "least_busy")
    try:
        await h.faults("*", {"kind": "stall", "after_chunks": 1, "delay": 1.5})  # the next request's stream
        async with h.session.post(h.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
            assert r.status == 200
            busy = r.headers["X-Account-Email"]
            assert (await r.content.readline()).startswith(b"data: ")  # the stream is under way
            seen = []
            for _ in range(6):
                status, _, headers = await h.post_json("/v1/chat/completions", CHAT)
                assert status == 200
                seen.append(headers["X-Account-Email"])
            assert busy not in seen and len(set(seen)) == 2  # the two idle accounts, in turn
            shown = await admin_accounts(h)
            assert shown[busy]["in_flight"] == 1 and sum(a["in_flight"] for a in shown.values()) == 1
            rest = await r.text()
        assert rest.rstrip().endswith("data: [DONE]")
        deadline = time.monotonic() + 3
        while (await admin_accounts(h))[busy]["in_flight"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert (await admin_accounts(h))[busy]["in_flight"] == 0  # taken off when the stream ended
    finally:
        await h.close()


async def test_a_stream_broken_after_its_first_byte_counts_as_a_failure(config_dir: Path) -> None:
    h = await _harness(config_dir, "round_robin")
    try:
        await h.faults("*", {"kind": "reset", "after_chunks": 1})
        async with h.session.post(h.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
            account = r.headers["X-Account-Email"]
            assert '"error"' in await r.text()
        shown = await admin_accounts(h)
        assert shown[account]["error_rate"] == 0.5 and shown[account]["in_flight"] == 0
    finally:
        await h.close()


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 429, "retry_after": 0}], ids=["500", "429"])
async def test_p2c_prefers_the_healthy_accounts_after_failures(config_dir: Path, fault: dict) -> None:
    """Account a fails every attempt (without resting: no cooldown to hide it). Round robin would
    send it a third of the requests; seeded p2c tries it at most a few times in 60 requests."""
    h = await _harness(config_dir, "p2c")
    try:
        h.gateway.store.random.seed(14)
        await h.faults("sim-key-a", {**fault, "times": -1})
        for _ in range(60):
            status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
            assert status == 200, doc
            assert headers["X-Account-Email"] != "sim-a@simulator.local"
        tried = Counter(r["key"] for r in await h.sim_requests())
        assert tried["sim-key-a"] <= 3, tried
        assert tried["sim-key-b"] > 20 and tried["sim-key-c"] > 20, tried
        shown = await admin_accounts(h)
        assert shown["sim-a@simulator.local"]["error_rate"] > 0.4
        assert shown["sim-b@simulator.local"]["error_rate"] == 0.0
    finally:
        await h.close()


async def test_admin_accounts_shows_weight_in_flight_and_error_rate(config_dir: Path) -> None:
    h = await _harness(config_dir, "round_robin", weight=3)
    try:
        seen = []
        for _ in range(5):
            status, _, headers = await h.post_json("/v1/chat/completions", CHAT)
            assert status == 200
            seen.append(headers["X-Account-Email"].split("@")[0])
        assert seen == ["sim-a", "sim-b", "sim-a", "sim-c", "sim-a"]  # weights {3, 1, 1}, smoothly
        shown = await admin_accounts(h)
        assert {e: (a["weight"], a["in_flight"], a["error_rate"]) for e, a in shown.items()} == {
            "sim-a@simulator.local": (3, 0, 0.0), "sim-b@simulator.local": (1, 0, 0.0),
            "sim-c@simulator.local": (1, 0, 0.0)}
        async with h.session.get(h.url + "/metrics") as r:
            assert 'router_accounts_in_flight{provider="gemini"} 0.0' in await r.text()
    finally:
        await h.close()
