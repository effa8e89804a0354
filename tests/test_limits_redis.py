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


# concurrency: a lease in every concurrency cell, in the same script as the rate cells

CONC = ("key:k:concurrency:2", 2)


async def lease_count(state: RedisState, cell: str = CONC[0]) -> int:
    return int(await state._client.zcard(state.limit_key("k", cell)))


async def test_a_lease_is_taken_refused_and_given_back(state: RedisState) -> None:
    assert await state.reserve_all("k", [], T0, slots=[CONC], lease="g:1", ttl_s=30) == (0, 0.0, [])
    assert (await state.reserve_all("k", [], T0, slots=[CONC], lease="g:2", ttl_s=30))[0] == 0
    assert await state.reserve_all("k", [], T0, slots=[CONC], lease="g:3", ttl_s=30) == (1, 0.0, [])  # full
    assert await lease_count(state) == 2
    await state.release_leases({state.limit_key("k", CONC[0]): ["g:1"]})
    assert (await state.reserve_all("k", [], T0, slots=[CONC], lease="g:3", ttl_s=30))[0] == 0


async def test_rate_and_concurrency_cells_all_or_none(state: RedisState) -> None:
    rpm = ("key:k:rpm:1", 60.0, 1, 1)
    key_conc, team_conc = ("key:k:concurrency:1", 1), ("team:t:concurrency:5", 5)
    assert (await state.reserve_all("k", [rpm], T0, slots=[key_conc, team_conc], lease="g:1", ttl_s=30))[0] == 0
    assert await state.reserve_all("k", [rpm], T0, slots=[team_conc, key_conc], lease="g:2",
                                   ttl_s=30) == (3, 0.0, [])  # the key's concurrency (index over rates, then slots)
    assert await lease_count(state, team_conc[0]) == 1  # the team's slot was not taken
    await state.release_leases({state.limit_key("k", key_conc[0]): ["g:1"]})
    denied, wait, _ = await state.reserve_all("k", [rpm], T0, slots=[key_conc], lease="g:3", ttl_s=30)
    assert denied == 1 and wait == pytest.approx(60.0)  # the rpm cell refuses now: no lease taken
    assert await lease_count(state, key_conc[0]) == 0


async def test_leases_expire_unless_renewed(state: RedisState) -> None:
    for member in ("dead:1", "live:1"):
        assert (await state.reserve_all("k", [], T0, slots=[CONC], lease=member, ttl_s=10))[0] == 0
    key = state.limit_key("k", CONC[0])

    async def take(at_ms: int, member: str) -> bool:
        return (await state.reserve_all("k", [], T0 + at_ms, slots=[CONC], lease=member, ttl_s=10))[0] == 0

    assert await state.renew_leases({key: ["live:1", "gone:9"]}, 10, T0 + 8_000) == 1  # an unknown lease stays out
    assert not await take(9_999, "x:1")
    assert await take(10_000, "x:1")  # dead:1 expired
    assert not await take(10_000, "x:2")  # live:1 holds
    assert not await take(17_999, "x:2")
    assert await take(18_000, "x:2")  # renewed: 18 s
    assert 0 < await state._client.pttl(key) <= 10_000  # the set itself goes with its last lease


async def test_pipelined_scripts_load_themselves_after_a_script_flush(state: RedisState) -> None:
    assert (await state.reserve_all("k", [("key:k:tpm:600", 0.1, 600, 500)], slots=[CONC], lease="g:1",
                                    ttl_s=30))[0] == 0
    await state._client.script_flush()  # as after a Redis restart: NOSCRIPT once, then loaded
    await state.adjust_all("k", [("key:k:tpm:600", 0.1, 600, -500)])
    assert await state.renew_leases({state.limit_key("k", CONC[0]): ["g:1"]}, 30) == 1
    denied, _, cells = await state.reserve_all("k", [("key:k:tpm:600", 0.1, 600, 600)])
    assert denied == 0 and cells[0][0] == 0  # the correction gave the 500 back: a whole bucket fits
