"""Circuit breaking (router.circuit): breakers per account and per provider, opened by the simulator's
fault injection, on an injectable clock: the growing ejection, half-open with exactly one probe,
closing and re-opening, the provider's 503 with Retry-After in each API family, max_ejected_percent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.accounts import Account, Pool, StateStore
from router.circuit import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    CircuitSettings,
    compile_circuit,
    observe,
    provider_circuit,
    verdict,
)
from router.registry import template_filters
from router.snapshot import build, check
from tests.conftest import FAST_RETRY, Harness, copy_routes, start_gateway


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SETTINGS = CircuitSettings(consecutive_failures=3, failure_ratio=0.5, min_requests=10, window=30.0,
                           base_ejection=10.0, max_ejection=25.0, max_ejected_percent=50, probe_timeout=5.0)


def pool_of(n: int, settings: CircuitSettings = SETTINGS) -> Pool:
    return Pool("p", tuple(Account("p", f"a{i}", f"a{i}@x", "k") for i in range(n)), "round_robin", settings)


def fail(store: StateStore, pool: Pool, acc: Account, times: int, failed: bool | None = True) -> bool:
    opened = False
    for _ in range(times):
        opened = observe(store, pool, acc, failed, SETTINGS)
    return opened


# --- the breaker on its own ------------------------------------------------------------------------


def test_what_counts_as_a_failure() -> None:
    assert verdict(500) and verdict(503) and verdict(529) and verdict("timeout") and verdict("connect_error")
    assert verdict("reset") and verdict("malformed")
    assert verdict(429) is None  # the cooldown's business
    assert verdict(400) is False and verdict(401) is False


def test_settings_compile_with_defaults_and_durations() -> None:
    assert compile_circuit(None) is None and compile_circuit(False) is None
    s = compile_circuit({"consecutive_failures": 2, "window": "1m", "max_ejection": "5m"})
    assert s is not None and (s.consecutive_failures, s.window, s.max_ejection, s.base_ejection) == (2, 60, 300, 30)


def test_a_provider_refines_turns_on_or_turns_off_the_section(tmp_path: Path) -> None:
    top = compile_circuit({"consecutive_failures": 4})
    assert provider_circuit(top, None) is top and provider_circuit(top, False) is None
    refined = provider_circuit(top, {"base_ejection": "10s"})
    assert refined is not None and (refined.consecutive_failures, refined.base_ejection) == (4, 10.0)
    alone = provider_circuit(None, {"window": 5})
    assert alone is not None and (alone.window, alone.consecutive_failures) == (5.0, 5)
    config = copy_routes(tmp_path / "routes.d")
    (config / "45-circuit.yaml").write_text("circuit: {consecutive_failures: 4}\n")
    providers = (config / "10-providers.yaml").read_text()
    (config / "10-providers.yaml").write_text(providers.replace(
        "  sim-openai:\n", "  sim-openai:\n    circuit: false\n").replace(
        "  sim-anthropic:\n", "  sim-anthropic:\n    circuit: {base_ejection: 1m}\n"))
    snap, _ = build(config, 1, template_filters(), env={})
    assert snap.providers["sim-openai"].pool.circuit is None
    anthropic = snap.providers["sim-anthropic"].pool.circuit
    assert anthropic is not None and (anthropic.consecutive_failures, anthropic.base_ejection) == (4, 60.0)
    (config / "45-circuit.yaml").write_text("circuit: {consecutive_failures: 0, max_ejection: soon}\n")
    errors = check(config, template_filters(), env={})
    assert {e.pointer for e in errors} == {"/circuit/consecutive_failures", "/circuit/max_ejection"}, errors


def test_consecutive_failures_eject_an_account_and_a_success_resets_the_count() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(4)
    acc = pool.accounts[0]
    fail(store, pool, acc, 2)
    observe(store, pool, acc, False, SETTINGS)  # the run is broken
    fail(store, pool, acc, 2)
    assert store.state(acc.state_key).ejected_until == 0.0
    fail(store, pool, acc, 1)
    assert store.circuits.accounts[acc.state_key].state == OPEN
    assert store.state(acc.state_key).cooling_for("m", clock()) == pytest.approx(10.0)
    assert pool.pick(store, "m", None, set()).account is not acc  # ejected: not picked


def test_a_failure_ratio_over_the_window_ejects() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(4)
    acc = pool.accounts[0]
    for i in range(12):  # every other attempt fails: never 3 in a row, but half (counted from the first failure)
        observe(store, pool, acc, i % 2 == 1, SETTINGS)
    assert store.circuits.accounts[acc.state_key].state == OPEN
    assert "6 of 11" in store.circuits.accounts[acc.state_key].reason


def test_the_ejection_grows_with_each_one_in_a_row_is_capped_and_decays() -> None:
    b, clock = Breaker(), 0.0
    lengths = []
    for _ in range(4):
        b.open(clock, SETTINGS)
        lengths.append(b.until - clock)
        clock = b.until
        assert b.claim(clock, SETTINGS) and b.state == HALF_OPEN  # the probe fails: open again
    assert lengths == [10.0, 20.0, 25.0, 25.0]  # base x n, capped at max_ejection
    b.close(clock)
    b.open(clock + 65.0, SETTINGS)  # closed for two windows: two ejections forgotten
    assert b.ejections == 3 and b.until - (clock + 65.0) == 25.0
    b.close(clock + 100)
    b.open(clock + 100 + 10 * 30.0, SETTINGS)
    assert b.ejections == 1


def test_half_open_lets_exactly_one_probe_through_then_closes_on_success() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(1)
    acc = pool.accounts[0]
    fail(store, pool, acc, 3)
    assert pool.pick(store, "m", None, set()).account is None
    clock.now += 10.0
    assert pool.pick(store, "m", None, set()).account is acc  # the probe
    assert store.circuits.accounts[acc.state_key].state == HALF_OPEN
    assert pool.pick(store, "m", None, set()).account is None  # the others: still ejected
    observe(store, pool, acc, False, SETTINGS)
    assert store.circuits.accounts[acc.state_key].state == CLOSED
    assert pool.pick(store, "m", None, set()).account is acc


def test_a_failed_probe_ejects_again_for_longer_and_a_lost_one_frees_its_slot() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(1)
    acc = pool.accounts[0]
    fail(store, pool, acc, 3)
    clock.now += 10.0
    assert pool.pick(store, "m", None, set()).account is acc
    observe(store, pool, acc, True, SETTINGS)
    b = store.circuits.accounts[acc.state_key]
    assert b.state == OPEN and b.until - clock.now == 20.0
    clock.now += 20.0
    assert pool.pick(store, "m", None, set()).account is acc  # a probe whose client goes away
    clock.now += 5.0  # probe_timeout: another may probe
    assert pool.pick(store, "m", None, set()).account is acc


def test_a_429_neither_opens_nor_resets_and_closes_a_probe() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(1)
    acc = pool.accounts[0]
    fail(store, pool, acc, 2)
    fail(store, pool, acc, 5, None)
    fail(store, pool, acc, 1)  # the third in a row: 429s in between do not count
    assert store.circuits.accounts[acc.state_key].state == OPEN
    clock.now += 10.0
    pool.pick(store, "m", None, set())
    observe(store, pool, acc, None, SETTINGS)
    assert store.circuits.accounts[acc.state_key].state == CLOSED


def test_max_ejected_percent_is_respected() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(4)
    for acc in pool.accounts:
        fail(store, pool, acc, 3)
    ejected = [a.id for a in pool.accounts if store.state(a.state_key).ejected_until > clock()]
    assert ejected == ["a0", "a1"]  # 50% of 4
    two = pool_of(2)
    store2 = StateStore(clock)
    for acc in two.accounts:
        fail(store2, two, acc, 3)
    assert [a.id for a in two.accounts if store2.state(a.state_key).ejected_until > clock()] == ["a0"]


def test_the_provider_opens_when_its_accounts_fail_together_and_an_operator_reset_closes_an_account() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(2)
    a, b = pool.accounts
    assert not observe(store, pool, a, True, SETTINGS)
    assert not observe(store, pool, b, True, SETTINGS)
    assert observe(store, pool, a, True, SETTINGS)  # three in a row across the provider
    assert store.circuits.providers["p"].state == OPEN
    store.reset(a.state_key)
    assert a.state_key not in store.circuits.accounts and store.state(a.state_key).ejected_until == 0.0


def test_the_provider_stays_closed_while_an_account_in_service_has_not_failed() -> None:
    # least_busy and p2c pick a fast-failing account more often than a busy healthy one: failures in
    # a row across the failing accounts are theirs, not the provider's
    store, pool = StateStore(Clock()), pool_of(3, CircuitSettings(consecutive_failures=3, failure_ratio=0.5,
                                                                  min_requests=4, window=30.0,
                                                                  max_ejected_percent=100))
    a, b, healthy = pool.accounts
    for acc in (a, b, a, b, a, b):
        assert not observe(store, pool, acc, True, pool.circuit)  # type: ignore[arg-type]  # set above
    assert "p" in store.circuits.providers and store.circuits.providers["p"].state == CLOSED
    assert store.circuits.accounts[a.state_key].state == OPEN  # each failing account is ejected instead
    assert not observe(store, pool, healthy, False, pool.circuit)  # type: ignore[arg-type]


def test_an_account_that_answers_again_is_no_longer_one_of_the_failing() -> None:
    store, pool = StateStore(Clock()), pool_of(3, CircuitSettings(consecutive_failures=3, failure_ratio=0.5,
                                                                  min_requests=6, window=30.0,
                                                                  max_ejected_percent=50))
    a, b, healthy = pool.accounts
    settings = pool.circuit
    assert settings is not None
    observe(store, pool, healthy, True, settings)  # one blip
    for _ in range(6):
        observe(store, pool, healthy, False, settings)
        for acc in (a, b, a, b):
            assert not observe(store, pool, acc, True, settings)
    assert store.circuits.providers["p"].state == CLOSED
    assert healthy.state_key not in store.circuits.providers["p"].failed_accounts


def test_the_provider_opens_once_every_account_in_service_failed_in_the_window() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(3, CircuitSettings(consecutive_failures=3, failure_ratio=0,
                                                                max_ejected_percent=50, window=30.0))
    a, b, c = pool.accounts
    settings = pool.circuit
    assert settings is not None
    for acc in (a, a, a):  # a is ejected (the first ejection always is)
        observe(store, pool, acc, True, settings)
    assert store.circuits.accounts[a.state_key].state == OPEN
    assert not observe(store, pool, b, True, settings)  # the run goes on, but c has not failed
    clock.now += 31  # a new window: b's failure is forgotten (and a is back in service)
    assert not observe(store, pool, c, True, settings)
    assert store.circuits.providers["p"].failed_accounts == {c.state_key}
    assert not observe(store, pool, b, True, settings)
    assert observe(store, pool, a, True, settings)  # a, b and c, all in service, failed: the provider opens
    assert store.circuits.providers["p"].state == OPEN and store.circuits.providers["p"].failed_accounts == set()


def test_an_opening_that_ran_out_shows_as_half_open() -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(1)
    fail(store, pool, pool.accounts[0], 3)
    b = store.circuits.accounts[pool.accounts[0].state_key]
    assert b.public(5000.0, clock.now)["state"] == OPEN and b.shown(clock.now) == OPEN
    clock.now = b.until
    assert b.public(5000.0, clock.now)["state"] == HALF_OPEN and b.state == OPEN  # no request claimed it yet


# --- through a gateway and the simulator -------------------------------------------------------------


CIRCUIT_YAML = "circuit: {consecutive_failures: 2, base_ejection: 30s, max_ejection: 2m, probe_timeout: 10s}\n"


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[tuple[Harness, Clock]]:
    config = copy_routes(tmp_path / "routes.d")
    (config / "40-retry.yaml").write_text(FAST_RETRY)
    (config / "45-circuit.yaml").write_text(CIRCUIT_YAML)
    h = await start_gateway(config)
    clock = Clock()
    h.gateway.store.clock = clock
    try:
        yield h, clock
    finally:
        await h.close()


CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}  # sim-openai, one account


async def open_openai(h: Harness) -> None:
    await h.faults("sim-key-openai", {"status": 500, "times": 2})
    for _ in range(2):
        status, _, _ = await h.post_json("/v1/chat/completions", CHAT)
        assert status == 500


async def test_consecutive_5xx_open_the_provider_circuit_then_503_with_retry_after(
        gate: tuple[Harness, Clock]) -> None:
    h, clock = gate
    await open_openai(h)
    sent = len(await h.sim_requests())
    status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 503 and doc["error"]["code"] == "circuit_open", doc
    assert "sim-openai" in doc["error"]["message"] and headers["Retry-After"] == "30"
    assert len(await h.sim_requests()) == sent  # nothing sent upstream
    admin = await (await h.request("GET", "/admin/accounts")).json()
    assert admin["providers"]["sim-openai"]["state"] == "open" and admin["providers"]["sim-openai"]["ejections"] == 1
    [acc] = [a for a in admin["accounts"] if a["provider"] == "sim-openai"]
    assert acc["state"] == "ejected" and acc["circuit"]["state"] == "open" and acc["circuit"]["until"] is not None
    metrics = await (await h.request("GET", "/metrics")).text()
    assert 'router_circuit_state{account="",provider="sim-openai"} 1.0' in metrics
    assert 'router_circuit_ejections_total{account="",provider="sim-openai"} 1.0' in metrics
    assert 'router_circuit_state{account="sim-openai@simulator.local",provider="sim-openai"} 1.0' in metrics


async def test_the_probe_closes_the_circuit_on_success(gate: tuple[Harness, Clock]) -> None:
    h, clock = gate
    await open_openai(h)
    clock.now += 30.0
    status, doc, _ = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 200, doc
    admin = await (await h.request("GET", "/admin/accounts")).json()
    assert admin["providers"]["sim-openai"]["state"] == "closed"
    metrics = await (await h.request("GET", "/metrics")).text()
    assert 'router_circuit_state{account="",provider="sim-openai"} 0.0' in metrics


async def test_a_failed_probe_reopens_for_longer(gate: tuple[Harness, Clock]) -> None:
    h, clock = gate
    await open_openai(h)
    clock.now += 30.0
    await h.faults("sim-key-openai", {"status": 502})
    status, _, _ = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 502
    status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 503 and headers["Retry-After"] == "60", doc  # base x 2


async def test_half_open_sends_exactly_one_probe_under_concurrent_requests(gate: tuple[Harness, Clock]) -> None:
    h, clock = gate
    await open_openai(h)
    clock.now += 30.0
    sent = len(await h.sim_requests())
    await h.faults("sim-key-openai", {"kind": "slow_first_byte", "delay": 0.3})
    results = await asyncio.wait_for(asyncio.gather(
        *(h.post_json("/v1/chat/completions", CHAT) for _ in range(6))), 10)
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 503, 503, 503, 503, 503], statuses
    assert len(await h.sim_requests()) == sent + 1


@pytest.mark.parametrize(("path", "body", "check"), [
    ("/v1/messages", {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
     lambda doc: doc["type"] == "error" and doc["error"]["type"] == "overloaded_error"),
    ("/v1beta/models/gemini-x:generateContent", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
     lambda doc: doc["error"]["code"] == 503 and doc["error"]["status"] == "UNAVAILABLE"),
    ("/v1/chat/completions", CHAT, lambda doc: doc["error"]["code"] == "circuit_open"),
])
async def test_the_open_circuit_answers_in_the_callers_api_family(gate: tuple[Harness, Clock], path: str,
                                                                  body: dict, check: object) -> None:
    h, _ = gate
    await h.faults("*", {"status": 500, "times": 4})
    for _ in range(2):  # the simulator provider has two accounts: a request tries both
        await h.post_json(path, body)
    status, doc, headers = await h.post_json(path, body)
    assert status == 503 and "circuit is open" in str(doc), doc
    assert int(headers["Retry-After"]) >= 1
    assert callable(check) and check(doc), doc


def test_one_log_line_per_transition(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store, pool = StateStore(clock), pool_of(1)
    acc = pool.accounts[0]
    with caplog.at_level("INFO", logger="router.circuit"):
        fail(store, pool, acc, 3)
        fail(store, pool, acc, 2)  # attempts already under way: no new transition
        clock.now += 10.0
        pool.pick(store, "m", None, set())
        observe(store, pool, acc, False, SETTINGS)
    lines = [r.getMessage() for r in caplog.records if r.name == "router.circuit"]
    assert lines == [
        "circuit of account 'p/a0' opened: for 10s (3 consecutive failures)",
        "circuit of provider 'p' opened: for 10s (3 consecutive failures)",
        "circuit of account 'p/a0' half-open: probing with one request",
        "circuit of account 'p/a0' closed: the probe succeeded",
    ], lines


async def test_a_reload_keeps_the_circuits(gate: tuple[Harness, Clock]) -> None:
    h, _ = gate
    await open_openai(h)
    (h.config_dir / "45-circuit.yaml").write_text(CIRCUIT_YAML.replace("probe_timeout: 10s", "probe_timeout: 20s"))
    assert await h.gateway.reload("test")
    status, doc, _ = await h.post_json("/v1/chat/completions", CHAT)
    assert status == 503 and doc["error"]["code"] == "circuit_open", doc


async def test_an_open_circuit_moves_a_fallback_list_on_without_sending(tmp_path: Path) -> None:
    config = copy_routes(tmp_path / "routes.d")
    (config / "40-retry.yaml").write_text(FAST_RETRY)
    (config / "45-circuit.yaml").write_text(CIRCUIT_YAML)
    mapping = (config / "20-mapping.yaml").read_text()
    (config / "20-mapping.yaml").write_text(mapping.replace(
        "  exact:\n", "  exact:\n    gpt-backed: [sim-openai/gpt-test, simulator/gemini-2.5-flash]\n", 1))
    h = await start_gateway(config)
    h.gateway.store.clock = Clock()
    try:
        await h.faults("sim-key-openai", {"status": 500, "times": 2})
        body = {**CHAT, "model": "gpt-backed"}
        for _ in range(2):  # each 500 falls back at once; together they open sim-openai's circuit
            status, _, headers = await h.post_json("/v1/chat/completions", body)
            assert status == 200 and headers["X-Mapped-Model"] == "gemini-2.5-flash"
        admin = await (await h.request("GET", "/admin/accounts")).json()
        assert admin["providers"]["sim-openai"]["state"] == "open"
        sent = len(await h.sim_requests())  # 2 to sim-openai, 2 to the Gemini simulator
        status, _, headers = await h.post_json("/v1/chat/completions", body)
        assert status == 200 and headers["X-Mapped-Model"] == "gemini-2.5-flash"
        assert len(await h.sim_requests()) == sent + 1  # the Gemini one only: nothing went to sim-openai
    finally:
        await h.close()


@pytest.mark.parametrize("strategy", ["least_busy", "p2c", "round_robin"])
async def test_two_failing_accounts_of_three_never_open_the_provider(tmp_path: Path, strategy: str) -> None:
    config = copy_routes(tmp_path / "routes.d")
    (config / "40-retry.yaml").write_text(FAST_RETRY)
    (config / "45-circuit.yaml").write_text("circuit: {consecutive_failures: 3, failure_ratio: 0.5, min_requests: 6}\n")
    (config / "46-trio.yaml").write_text(
        "providers:\n  trio:\n    dialect: openai\n    base_url: builtin:simulator\n    template: openai\n"
        f"    scheduling: {strategy}\n    accounts:\n"
        + "".join(f"      - {{email: t{i}@x, api_key: trio-key-{i}}}\n" for i in range(3)))
    mapping = (config / "20-mapping.yaml").read_text()
    (config / "20-mapping.yaml").write_text(mapping.replace("  exact:\n", "  exact:\n    trio: trio/gpt-test\n", 1))
    h = await start_gateway(config)
    try:
        for i in (0, 1):
            await h.faults(f"trio-key-{i}", {"status": 500, "times": -1})
        body = {**CHAT, "model": "trio"}
        statuses = [(await h.post_json("/v1/chat/completions", body))[0] for _ in range(30)]
        admin = await (await h.request("GET", "/admin/accounts")).json()
        assert admin["providers"]["trio"]["state"] == "closed", admin["providers"]["trio"]
        assert statuses.count(200) >= 24, statuses  # retries rotate onto the healthy account
        await h.faults("trio-key-2", {"status": 500, "times": -1})  # now every account in service fails
        for _ in range(10):
            await h.post_json("/v1/chat/completions", body)
        admin = await (await h.request("GET", "/admin/accounts")).json()
        assert admin["providers"]["trio"]["state"] == "open"
    finally:
        await h.close()


async def test_admin_explain_shows_the_live_circuits(gate: tuple[Harness, Clock]) -> None:
    h, _ = gate
    await open_openai(h)
    status, doc, _ = await h.post_json("/admin/explain", CHAT)
    assert status == 200, doc
    [pool] = doc["pools"]
    assert pool["served_by"] == "sim-openai" and pool["circuit"]["state"] == "open"
    assert pool["circuit"]["ejections"] == 1 and pool["accounts"][0]["circuit"]["state"] == "open"
