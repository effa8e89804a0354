"""The status page across replicas: two gateways sharing one redis-server (``state: {backend: redis}``)
each answer ``GET /admin/status`` with both gateways' traffic and failed requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_RETRY, Harness, copy_routes, start_gateway
from tests.redis_server import RedisServer, server_fixture

server = server_fixture()
HI = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def pair(tmp_path: Path, server: RedisServer) -> AsyncIterator[tuple[Harness, Harness]]:
    gateways = []
    for name in ("a", "b"):
        config = copy_routes(tmp_path / name)
        (config / "40-retry.yaml").write_text(FAST_RETRY)
        (config / "05-state.yaml").write_text(
            f"state: {{backend: redis, url: 'redis://127.0.0.1:{server.port}/0', prefix: status-{tmp_path.name}, "
            "sync_interval: 100ms}\n")
        gateways.append(await start_gateway(config))
    yield gateways[0], gateways[1]
    for gw in gateways:
        await gw.close()


async def status(h: Harness) -> Any:
    async with h.session.get(h.url + "/admin/status") as r:
        assert r.status == 200
        return await r.json()


async def test_each_replica_shows_the_fleets_traffic(pair: tuple[Harness, Harness]) -> None:
    a, b = pair
    for _ in range(3):
        assert (await a.post_json("/v1/chat/completions", HI))[0] == 200
    for _ in range(2):
        assert (await b.post_json("/v1/chat/completions", HI))[0] == 200
    await b.faults("*", {"status": 400})
    code, _, headers = await b.post_json("/v1/chat/completions", HI)
    assert code == 400
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # each sends its finished seconds once a second; the answering one adds its own unsent
        docs = [await status(a), await status(b)]
        if all(d["traffic"]["totals"]["requests"] == 6 for d in docs) and all(
                any(f["request_id"] == headers["X-Request-Id"] for f in d["failed"]) for d in docs):
            break
        assert asyncio.get_running_loop().time() < deadline, [d["traffic"]["totals"]["requests"] for d in docs]
        await asyncio.sleep(0.2)
    for d in docs:  # and no second is counted twice once every process sent it
        assert sum(d["traffic"]["totals"]["requests_per_s"]) == 6 and d["traffic"]["totals"]["errors"] == 1
