"""Limits per client model (``limits.models`` on a key and on a team): the first matching entry (an
exact name before any pattern, then the patterns in order) holds a request on top of the owner's
overall limits; plans looked up per model, not rebuilt; counters kept by pattern across a reload;
the cells of removed keys (and TATs at rest) dropped when a new snapshot goes live; the redis path
reserves the extra cells under the key's one hash tag."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from router.auth import ApiKey, compile_auth
from router.errors import GatewayError
from router.limits import Limiter, LimitPlan, Limits, limit_plan
from router.model_limits import MAX_MODEL_NAMES, FirstMatch
from router.state_redis import RedisState
from tests.conftest import Harness, start_gateway
from tests.redis_server import RedisServer, server_fixture

server = server_fixture()
A_KEY, B_KEY = "sk-model-alpha", "sk-model-beta"
AUTH = f"""\
auth:
  mode: strict
  api_keys:
    - name: alpha
      key: "{A_KEY}"
      limits: {{rpm: 100, models: {{"gpt-*": {{rpm: 1}}, "gpt-5-mini": {{rpm: 2}}}}}}
    - {{name: beta, key: "{B_KEY}", team: crew}}
  teams:
    crew: {{limits: {{models: {{"gemini-*": {{rpm: 1}}}}}}}}
"""
HI = [{"role": "user", "content": "hi"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy() -> ApiKey:
    return compile_auth({"mode": "strict", "teams": {"crew": {"limits": {"tpm": 1000, "models": {"m-*": {"rpm": 3}}}}},
                         "api_keys": [{"name": "k", "key": "x", "team": "crew",
                                       "limits": {"rpm": 50, "models": {"m-*": {"rpm": 1}, "m-1": {"rpm": 2},
                                                                        "*": {"concurrency": 4}}}}]}, False).keys[0]


def plan_of(key: ApiKey, model: str) -> LimitPlan:
    plan = key.plan_for(model)
    assert plan is not None
    return plan


def test_first_match_exact_names_before_patterns_in_order() -> None:
    match = FirstMatch(("gpt-*", "gpt-4o", "*", "gpt-4o-*"))
    assert match.index("gpt-4o") == 1  # exact, though a pattern comes first
    assert match.index("gpt-4o-mini") == 0  # the first pattern in order
    assert match.index("claude") == 2
    assert FirstMatch(("a-*",)).index("b") == -1


def test_a_models_plan_holds_the_owners_and_the_matching_entries() -> None:
    key = policy()
    plan = plan_of(key, "m-1")
    ids = {c.id for c in plan.cells()}  # m-1: its exact entry (not m-* nor *, which come first), the team's m-*
    assert ids == {"key:k:rpm:50", "team:crew:tpm:1000", "key:k:rpm:2:m-1", "team:crew:rpm:3:m-*"}
    assert {c.id for c in plan_of(key, "m-2").cells()} == {"key:k:rpm:50", "team:crew:tpm:1000", "key:k:rpm:1:m-*",
                                                           "team:crew:rpm:3:m-*"}
    assert {c.id for c in plan_of(key, "other").cells()} == {"key:k:rpm:50", "team:crew:tpm:1000",
                                                             "key:k:concurrency:4:*"}
    assert plan_of(key, "m-2") is plan_of(key, "m-3")  # one plan per pair of entries, looked up
    assert all(c.tag == "team:crew" for c in (plan, plan_of(key, "other")))  # one hash tag for all of them


def test_the_plan_memory_is_bounded() -> None:
    key = policy()
    for i in range(MAX_MODEL_NAMES + 10):
        plan_of(key, f"m-x{i}")
    assert key.by_model is not None and len(key.by_model._names) <= MAX_MODEL_NAMES


def test_a_models_limit_holds_that_model_only() -> None:
    clock = Clock()
    limiter, key = Limiter(clock), policy()
    limiter.admit(plan_of(key, "m-2"), 1)
    with pytest.raises(GatewayError) as info:
        limiter.admit(plan_of(key, "m-3"), 1)  # the same pattern: the same cell
    assert "the key 'k' rpm limit for the models 'm-*' (1 request per minute)" in info.value.message
    limiter.admit(plan_of(key, "m-1"), 1)  # its own entry
    limiter.admit(plan_of(key, "other"), 1)


def test_a_new_snapshot_keeps_only_its_cells_and_those_in_use() -> None:
    clock = Clock()
    limiter = Limiter(clock)
    gone = limit_plan("gone", Limits(rpm=2, concurrency=1), None, None)
    stays = limit_plan("stays", Limits(rpm=2), None, None)
    assert gone is not None and stays is not None
    held = limiter.admit(gone, 0)
    limiter.admit(stays, 0)
    rested = limit_plan("rested", Limits(rpm=60), None, None)
    assert rested is not None
    limiter.admit(rested, 0)
    clock.now += 2  # rested's one request a second is past
    limiter.keep({c.id for c in stays.cells()} | {c.id for c in rested.cells()})
    assert limiter.reserved() == {"key:stays:rpm:2"}  # gone's removed, rested's at rest
    assert limiter.inflight() == {"key:gone:concurrency:1": 1}  # in flight until its request ends
    limiter.release(held)
    limiter.release(held)
    assert limiter.inflight() == {}  # never below 0


@pytest.fixture
async def h(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "00-server.yaml").write_text(AUTH)
    harness = await start_gateway(config_dir)
    try:
        yield harness
    finally:
        await harness.close()


async def chat(h: Harness, key: str, model: str) -> tuple[int, object, object]:
    return await h.post_json("/v1/chat/completions", {"model": model, "messages": HI},
                             headers={"Authorization": f"Bearer {key}"})


async def test_through_the_gateway_and_a_reload(h: Harness) -> None:
    assert [(await chat(h, A_KEY, "gpt-5"))[0] for _ in range(2)] == [200, 429]
    status, doc, headers = await chat(h, A_KEY, "gpt-4o")
    assert status == 429 and "for the models 'gpt-*'" in doc["error"]["message"]  # type: ignore[index]
    assert headers["x-ratelimit-limit-requests"] == "1"  # type: ignore[index]  # the tightest
    assert [(await chat(h, A_KEY, "gpt-5-mini"))[0] for _ in range(3)] == [200, 200, 429]  # its exact entry
    assert (await chat(h, B_KEY, "gemini-2.5-flash"))[0] == 200
    assert (await chat(h, B_KEY, "gemini-2.5-pro"))[0] == 429  # the team's pattern

    (h.config_dir / "00-server.yaml").write_text(AUTH.replace('"gpt-5-mini": {rpm: 2}', '"gpt-5-mini": {rpm: 3}'))
    assert await h.gateway.reload("test"), h.gateway.last_error
    assert (await chat(h, A_KEY, "gpt-5"))[0] == 429  # an unchanged entry keeps its counter
    assert (await chat(h, A_KEY, "gpt-5-mini"))[0] == 200  # a changed one starts afresh

    limiter = h.runner.dispatcher.engine.limiter
    assert any(cell.startswith("team:crew:") for cell in limiter.reserved())
    (h.config_dir / "00-server.yaml").write_text(AUTH.replace("crew: {limits: {models: {\"gemini-*\": {rpm: 1}}}}",
                                                              "crew: {}"))
    assert await h.gateway.reload("test"), h.gateway.last_error
    assert not any(cell.startswith("team:crew:") for cell in limiter.reserved())  # the removed limit's counter went
    assert (await chat(h, B_KEY, "gemini-2.5-pro"))[0] == 200


# --- the shared state's path -----------------------------------------------------------------------------


@pytest.fixture
async def state(server: RedisServer) -> AsyncIterator[RedisState]:
    connection = Redis(host="127.0.0.1", port=server.port)
    await connection.flushall()
    yield RedisState(connection, prefix="t")
    await connection.aclose()


async def test_the_redis_reservation_holds_the_models_cells_under_one_tag(state: RedisState) -> None:
    key = policy()
    plan = plan_of(key, "m-2")
    slots = {key_slot(state.limit_key(plan.tag, cell.id).encode()) for cell in plan.rates}
    assert len(plan.rates) == 4 and len(slots) == 1
    assert (await state.reserve_all(plan.tag, plan.costs(10)))[0] == 0
    denied, wait, _ = await state.reserve_all(plan.tag, plan_of(key, "m-3").costs(10))
    assert plan.rates[denied - 1].id == "key:k:rpm:1:m-*" and wait == pytest.approx(60.0, abs=0.5)
    assert (await state.reserve_all(plan.tag, plan_of(key, "other").costs(10)))[0] == 0  # not held by m-*


def test_admin_config_shows_the_teams_limits_without_keys() -> None:
    from router.auth import compile_auth

    policy = compile_auth({"mode": "strict", "teams": {
        "t": {"limits": {"rpm": 600, "models": {"gpt-*": {"tpm": 100}}}}, "bare": {}},
        "api_keys": [{"name": "k", "key": "sk-hidden-1", "team": "t"}]}, False)
    shown = policy.public()
    assert shown["team_limits"] == {"t": {"rpm": 600, "models": {"gpt-*": {"tpm": 100}}}}
    assert "sk-hidden-1" not in str(shown) and "team_budgets" not in shown
