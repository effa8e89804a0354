"""Token accounts with ``state: {backend: redis}`` (a real redis-server): two gateways share one refresh,
its token and a rotated refresh token; Redis down, each refreshes on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.sim import SimServer
from tests.conftest import Harness
from tests.redis_server import RedisServer, server_fixture
from tests.token_gateway import CHAT, age, gateway, refresh_account

server = server_fixture()


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


@pytest.fixture
async def pair(tmp_path: Path, server: RedisServer, sim: SimServer) -> AsyncIterator[tuple[Harness, Harness]]:
    if server.process is None:
        server.start()
    state = (f"state: {{backend: redis, url: 'redis://127.0.0.1:{server.port}/0', prefix: tok-{tmp_path.name}, "
             "sync_interval: 100ms}\n")
    accounts = [refresh_account("alice@example.com", "rt-alice", sim)]
    gateways = [await gateway(tmp_path / name, sim, accounts, state) for name in ("a", "b")]
    yield gateways[0], gateways[1]
    for h in gateways:
        await h.close()


async def _burst(h: Harness, n: int) -> list[int]:
    return [s for s, _, _ in await asyncio.gather(*(h.post_json("/v1/chat/completions", CHAT) for _ in range(n)))]


async def test_two_gateways_on_one_redis_refresh_once(pair: tuple[Harness, Harness], sim: SimServer) -> None:
    a, b = pair
    sim.oauth.delay = 0.3  # both gateways ask while the first refresh runs
    statuses = await asyncio.gather(_burst(a, 25), _burst(b, 25))
    assert statuses == [[200] * 25, [200] * 25]
    assert sim.oauth.requests == {"refresh_token": 1}
    assert {r["key"] for r in sim.requests()} == {"sim-at-1"}  # one token served both gateways
    await h_del(a)  # expired everywhere: again one refresh for both
    for h in pair:
        age(h, 7200)
    statuses = await asyncio.gather(_burst(a, 25), _burst(b, 25))
    assert statuses == [[200] * 25, [200] * 25]
    assert sim.oauth.requests == {"refresh_token": 2}


async def h_del(h: Harness) -> None:
    """Delete the shared access tokens (the next use refreshes)."""
    shared = h.gateway.shared
    assert shared is not None
    keys = [k async for k in shared.client.scan_iter(match="{tok-*:cred:*}:access")]
    if keys:
        await shared.client.delete(*keys)


async def test_a_refresh_token_rotated_by_one_gateway_is_used_by_the_other(pair: tuple[Harness, Harness],
                                                                           sim: SimServer) -> None:
    a, b = pair
    sim.oauth.rotate = True
    assert await _burst(a, 1) == [200]  # a: rt-alice -> sim-rt-N (rt-alice revoked)
    assert await _burst(b, 1) == [200]  # b: a's token, from Redis: no refresh
    assert sim.oauth.requests == {"refresh_token": 1}
    await h_del(a)
    age(b, 7200)
    assert await _burst(b, 1) == [200]  # b refreshes with the rotated token (rt-alice: invalid_grant)
    assert sim.oauth.requests == {"refresh_token": 2}
    accounts = (await (await b.request("GET", "/admin/accounts")).json())["accounts"]
    assert accounts[0]["state"] == "ok"


async def test_with_redis_down_each_gateway_refreshes_on_its_own(pair: tuple[Harness, Harness], sim: SimServer,
                                                                 server: RedisServer) -> None:
    a, b = pair
    server.stop()
    try:
        assert await _burst(a, 3) == [200] * 3
        assert await _burst(b, 3) == [200] * 3
        assert sim.oauth.requests == {"refresh_token": 2}
    finally:
        server.start()
