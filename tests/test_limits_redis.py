"""The client limits' one-round-trip reservation on a real redis-server: every cell of a request
(key and team, rpm and tpm) checked and reserved together, all or none, the same GCRA as in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from router.errors import GatewayError
from router.limits import Limiter, Limits, limit_plan
from router.state_redis import RedisState
from tests.redis_server import RedisServer, server_fixture

server = server_fixture()
T0 = 1_700_000_000_000  # ms


@pytest.fixture
async def state(server: RedisServer) -> AsyncIterator[RedisState]:
    connection = Redis(host="127.0.0.1", port=server.port)
    await connection.flushall()
    yield RedisState(connection, prefix="t")
    await connection.aclose()


async def test_all_or_none_in_one_script(state: RedisState) -> None:
    rpm, tpm = ("key:a:rpm:2", 30.0, 2, 1), ("team:t:tpm:100", 0.6, 100, 80)
    assert await state.reserve_all("t", [rpm, tpm], T0) == (0, 0.0, [(1, 30.0), (20, 48.0)])
    denied, wait, _ = await state.reserve_all("t", [rpm, ("team:t:tpm:100", 0.6, 100, 30)], T0)
    assert denied == 2 and wait == pytest.approx(6.0)  # the team's tpm: 66 s of use for 60 s
    assert await state.reserve_all("t", [rpm], T0) == (0, 0.0, [(0, 60.0)])  # the denied call took nothing
    denied, wait, _ = await state.reserve_all("t", [rpm], T0)
    assert denied == 1 and wait == pytest.approx(30.0)
    assert (await state.reserve_all("t", [rpm], T0 + 30_000))[0] == 0  # one more after 30 s: no fixed window


async def test_same_semantics_as_the_in_process_limiter(state: RedisState) -> None:
    plan = limit_plan("k", Limits(rpm=7, tpm=500), None, None)
    assert plan is not None
    clock_s = [T0 / 1000]
    local = Limiter(lambda: clock_s[0])
    costs = [1, 120, 3, 200, 90, 1, 400, 5]
    for step, tokens in enumerate(costs):
        clock_s[0] = T0 / 1000 + 2.5 * step
        cells = [(c.id, c.interval, c.limit, 1 if c.kind == "rpm" else tokens) for c in plan.rates]
        denied, _, _ = await state.reserve_all("k", cells, int(clock_s[0] * 1000))
        try:
            local.admit(plan, tokens)
            admitted = True
        except GatewayError:  # a 429
            admitted = False
        assert admitted == (denied == 0), (step, tokens)


async def test_a_teams_cells_share_one_slot(state: RedisState) -> None:
    slots = {key_slot(state.limit_key("team-a", cell).encode()) for cell in ("key:x:rpm:1", "team:team-a:tpm:9")}
    assert len(slots) == 1


async def test_adjust_all_corrects_a_reservation(state: RedisState) -> None:
    tpm = ("key:k:tpm:600", 0.1, 600, 500)
    assert (await state.reserve_all("k", [tpm]))[0] == 0
    assert (await state.reserve_all("k", [("key:k:tpm:600", 0.1, 600, 200)]))[0] == 1  # 700 > 600
    await state.adjust_all("k", [("key:k:tpm:600", 0.1, 600, -400)])  # used 100 of the 500 reserved
    denied, _, cells = await state.reserve_all("k", [("key:k:tpm:600", 0.1, 600, 200)])
    assert denied == 0 and 290 <= cells[0][0] <= 300
