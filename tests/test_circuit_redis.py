"""Circuits shared through ``state: {backend: redis}`` (a real redis-server): what one gateway ejects or
opens, the other stops picking or sending to after its next sync; with Redis down, each gateway keeps
its own circuits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.accounts import Account
from tests.conftest import FAST_RETRY, Harness, copy_routes, start_gateway
from tests.redis_server import RedisServer, server_fixture

server = server_fixture()

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}  # sim-openai, one account
GEMINI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}  # simulator: sim-a, sim-b


@pytest.fixture
async def pair(tmp_path: Path, server: RedisServer, request: pytest.FixtureRequest
               ) -> AsyncIterator[tuple[Harness, Harness]]:
    if server.process is None:
        server.start()
    ejection = getattr(request, "param", "30s")
    gateways = []
    for name in ("a", "b"):
        config = copy_routes(tmp_path / name)
        (config / "40-retry.yaml").write_text(FAST_RETRY)
        (config / "45-circuit.yaml").write_text(
            f"circuit: {{consecutive_failures: 2, base_ejection: {ejection}, probe_timeout: 5s}}\n")
        (config / "05-state.yaml").write_text(
            f"state: {{backend: redis, url: 'redis://127.0.0.1:{server.port}/0', prefix: circuit-{tmp_path.name}, "
            "sync_interval: 100ms}\n")
        gateways.append(await start_gateway(config))
    yield gateways[0], gateways[1]
    for gw in gateways:
        await gw.close()


async def until(check: object, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not (callable(check) and check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_provider_opened_by_one_gateway_is_open_on_the_other_after_a_sync(
        pair: tuple[Harness, Harness]) -> None:
    a, b = pair
    await a.faults("sim-key-openai", {"status": 500, "times": 2})
    for _ in range(2):
        assert (await a.post_json("/v1/chat/completions", CHAT))[0] == 500
    breakers = b.gateway.store.circuits.providers
    await until(lambda: "sim-openai" in breakers and breakers["sim-openai"].state == "open")
    status, doc, headers = await b.post_json("/v1/chat/completions", CHAT)
    assert status == 503 and doc["error"]["code"] == "circuit_open", doc
    assert 30 <= int(headers["Retry-After"]) <= 35  # the opening, and the opener's probe's time
    assert await b.sim_requests() == []  # b sent nothing to its upstream
    admin = await (await b.request("GET", "/admin/accounts")).json()
    assert admin["providers"]["sim-openai"]["state"] == "open"


async def test_an_account_ejected_by_one_gateway_is_not_picked_by_the_other(pair: tuple[Harness, Harness]) -> None:
    a, b = pair
    await a.faults("sim-key-a", {"status": 500, "times": 2})
    for _ in range(4):  # sim-a fails, the request rotates to sim-b; twice in a row ejects sim-a
        assert (await a.post_json("/v1/chat/completions", GEMINI))[0] == 200
    accounts = a.gateway.current.providers["simulator"].pool.accounts
    sim_a: Account = next(acc for acc in accounts if acc.id.startswith("sim-a"))
    assert a.gateway.store.state(sim_a.state_key).ejected_until > a.gateway.store.clock()
    await until(lambda: b.gateway.store.state(sim_a.state_key).ejected_until > b.gateway.store.clock())
    for _ in range(4):
        assert (await b.post_json("/v1/chat/completions", GEMINI))[0] == 200
    assert {r["key"] for r in await b.sim_requests()} == {"sim-key-b"}
    [view] = [x for x in (await (await b.request("GET", "/admin/accounts")).json())["accounts"]
              if x["key"] == sim_a.state_key]
    assert view["state"] == "ejected" and view["circuit"]["state"] == "open"


async def test_with_redis_down_each_gateway_keeps_its_own_circuits(pair: tuple[Harness, Harness],
                                                                   server: RedisServer) -> None:
    a, b = pair
    server.stop()
    try:
        await until(lambda: a.gateway.shared is not None and not a.gateway.shared.up)
        await a.faults("sim-key-openai", {"status": 500, "times": 2})
        for _ in range(2):
            assert (await a.post_json("/v1/chat/completions", CHAT))[0] == 500
        assert (await a.post_json("/v1/chat/completions", CHAT))[0] == 503
        assert (await b.post_json("/v1/chat/completions", CHAT))[0] == 200  # b never heard of it
    finally:
        server.start()
    # back up: a's kept opening is written and reaches b
    breakers = b.gateway.store.circuits.providers
    await until(lambda: "sim-openai" in breakers and breakers["sim-openai"].state == "open", 10.0)


@pytest.mark.parametrize("pair", ["1s"], indirect=True)
async def test_one_probe_for_all_gateways_and_its_success_closes_the_circuit_everywhere(
        pair: tuple[Harness, Harness]) -> None:
    a, b = pair
    await a.faults("sim-key-openai", {"status": 500, "times": 2})
    for _ in range(2):
        assert (await a.post_json("/v1/chat/completions", CHAT))[0] == 500
    breakers = b.gateway.store.circuits.providers
    await until(lambda: "sim-openai" in breakers and breakers["sim-openai"].state == "open")
    await asyncio.sleep(1.1)  # the opening ran out: a (which opened it) probes, b waits for its verdict
    status, doc, _ = await b.post_json("/v1/chat/completions", CHAT)
    assert status == 503 and doc["error"]["code"] == "circuit_open", doc
    assert (await a.post_json("/v1/chat/completions", CHAT))[0] == 200  # the one probe
    await until(lambda: breakers["sim-openai"].state == "closed")
    assert (await b.post_json("/v1/chat/completions", CHAT))[0] == 200
    assert len(await b.sim_requests()) == 1 and len(await a.sim_requests()) == 3
