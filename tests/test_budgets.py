"""Client budgets (tokens and/or usd per UTC day, week or month) on keys and teams: used up by the
real usage of non-stream and stream answers, a 429 ``insufficient_quota`` in every client family with
Retry-After until the period turns, re-admitted when it turns (an injectable clock), costs from the
price table, a team's budget shared by its keys, spend kept across a reload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest

from router.budgets import Budget, BudgetCell, Budgets, budget_plan, money, period
from router.errors import GatewayError
from tests.conftest import Harness, start_gateway

SPEND, CREW1, CREW2, PAY, FREE = "sk-budget-spend", "sk-budget-crew1", "sk-budget-crew2", "sk-budget-pay", "sk-free"
AUTH = f"""\
auth:
  mode: strict
  api_keys:
    - {{name: spender, key: "{SPEND}", budget: {{tokens: 20, period: day}}}}
    - {{name: crew-1, key: "{CREW1}", team: crew}}
    - {{name: crew-2, key: "{CREW2}", team: crew, limits: {{rpm: 100}}}}
    - {{name: payer, key: "{PAY}", budget: {{usd: 0.02, period: week}}}}
    - {{name: free, key: "{FREE}"}}
  teams:
    crew: {{budget: {{tokens: 30, period: month}}}}
"""
# the simulator answers every request with 1 input and 11 output tokens; gpt-5 is served by sim-openai
PRICES = 'prices:\n  "sim-openai/gpt-*": {input: 1000, output: 1000}\n'  # $0.012 a request
HI = [{"role": "user", "content": "hi"}]
T0 = datetime(2026, 11, 30, 20, 0, tzinfo=UTC).timestamp()  # a Monday, 4 h before the day turns


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- periods and the in-process counters ----------------------------------------------------------------


def test_utc_calendar_periods() -> None:
    at = datetime(2027, 1, 1, 13, 30, tzinfo=UTC).timestamp()  # a Friday
    day, week, month = (period(kind, at) for kind in ("day", "week", "month"))
    assert (day.label, day.start, day.end - day.start) == ("2027-01-01", at - 13.5 * 3600, 86_400)
    assert week.label == "2026-W53" and datetime.fromtimestamp(week.start, UTC) == datetime(2026, 12, 28, tzinfo=UTC)
    assert week.end - week.start == 7 * 86_400
    assert month.label == "2027-01" and datetime.fromtimestamp(month.end, UTC) == datetime(2027, 2, 1, tzinfo=UTC)
    december = period("month", datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
    assert datetime.fromtimestamp(december.end, UTC) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period("day", day.end).label == "2027-01-02"  # the end is the next period's start


def test_budget_used_up_then_the_period_turns() -> None:
    clock = Clock(datetime(2026, 11, 18, 20, 0, tzinfo=UTC).timestamp())
    budgets = Budgets(clock)
    plan = budget_plan("k", Budget("day", tokens=100), "t", Budget("month", usd=1.0))
    assert plan is not None
    budgets.admit(plan)
    budgets.charge(plan, 99, 500_000_000)
    budgets.admit(plan)  # 99 < 100: admitted (and may overshoot by its own use)
    budgets.charge(plan, 30, 0)
    with pytest.raises(GatewayError) as info:
        budgets.admit(plan)
    err = info.value
    assert (err.status, err.kind, err.code) == (429, "quota", "insufficient_quota")
    assert err.retry_after == pytest.approx(4 * 3600)
    assert err.message == ("Budget exhausted: the key 'k' budget (100 tokens per day) is used up (129 tokens "
                           "today); it resets at 2026-11-19T00:00:00Z")
    clock.now += 4 * 3600  # the day turns; the team's month goes on
    budgets.admit(plan)
    assert budgets.spent(plan.cells[0]) == [0, 0] and budgets.spent(plan.cells[1]) == [129, 500_000_000]
    budgets.charge(plan, 1, 600_000_000)
    with pytest.raises(GatewayError) as info:
        budgets.admit(plan)
    assert "the team 't' budget ($1.00 per month) is used up ($1.10 spent this month)" in info.value.message
    assert info.value.retry_after == pytest.approx(12 * 86_400)  # until 2026-12-01


def test_spend_belongs_to_owner_and_period_not_amount() -> None:
    assert BudgetCell("key", "a", Budget("day", tokens=5)).id == BudgetCell("key", "a", Budget("day", tokens=9)).id
    assert BudgetCell("key", "a", Budget("day", 5)).id != BudgetCell("key", "a", Budget("week", 5)).id
    assert BudgetCell("key", "a", Budget("day", 5)).id != BudgetCell("team", "a", Budget("day", 5)).id
    assert budget_plan("k", None, "t", None) is None
    assert [money(n) for n in (0, 12_000_000, 1_500_000_000, 123_456_789_000)] == \
        ["$0.00", "$0.012", "$1.50", "$123.456789"]


def test_shared_view_is_the_read_totals_plus_the_charges_since() -> None:
    clock = Clock()
    budgets = Budgets(clock)
    budgets.sharing = True
    plan = budget_plan("k", Budget("day", tokens=100), None, None)
    assert plan is not None
    cell = plan.cells[0]
    budgets.charge(plan, 10, 5)
    assert budgets.pending == {"key:k:day:2026-11-30": [10, 5, 4 * 3600 + 1]}
    sent, budgets.pending = budgets.pending, {}  # a sync takes them...
    budgets.charge(plan, 1, 1)  # ...and one more comes while it is on its way
    budgets.adopt({cell.id: (70, 50)}, {"day": "2026-11-30"})  # every gateway's, ours sent included
    assert budgets.spent(cell) == [71, 51]
    budgets.merge(sent)  # had the sync failed: kept, added to the newer charge
    assert budgets.pending == {"key:k:day:2026-11-30": [11, 6, 4 * 3600 + 1]}
    budgets.adopt({cell.id: (999, 0)}, {"day": "2026-11-29"})  # read for a day that has turned: ignored
    assert budgets.spent(cell) == [71, 51]
    budgets.pending = {}
    budgets.adopt({cell.id: (3, 80)}, {"day": "2026-11-30"})  # Redis restarted empty: no tokens given back
    assert budgets.spent(cell) == [71, 80]
    clock.now += 4 * 3600
    budgets.charge(plan, 2, 0)
    assert "key:k:day:2026-12-01" in budgets.pending and budgets.spent(cell) == [2, 0]


# --- through the gateway ---------------------------------------------------------------------------------


@pytest.fixture
async def h(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "00-server.yaml").write_text(AUTH)
    (config_dir / "70-prices.yaml").write_text(PRICES)
    harness = await start_gateway(config_dir)
    harness.gateway.budgets.wall = Clock()
    try:
        yield harness
    finally:
        await harness.close()


async def chat(h: Harness, key: str, **extra: object) -> tuple[int, object, object]:
    return await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI, **extra},
                             headers=bearer(key))


def spent(h: Harness, key: str) -> list[list[int]]:
    found = h.gateway.current.auth.identify(key)
    assert found is not None and found.budget is not None
    return [h.gateway.budgets.spent(cell) for cell in found.budget.cells]


async def test_tokens_used_up_by_stream_and_non_stream_answers_429_in_every_family(h: Harness) -> None:
    status, doc, _ = await chat(h, SPEND)
    assert status == 200 and doc["usage"]["total_tokens"] == 12  # type: ignore[index]
    assert spent(h, SPEND) == [[12, 12_000_000]]  # and its cost at sim-openai's price
    status, body, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI, "stream": True},
                                        headers=bearer(SPEND))  # served by Gemini, which always counts usage
    assert status == 200 and b'"usage"' not in body and body.endswith(b"data: [DONE]\n\n")
    assert spent(h, SPEND) == [[24, 12_000_000]]  # no price for simulator/gemini-2.5-flash here: no cost
    status, body, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI, "stream": True},
                                        headers=bearer(FREE))  # OpenAI passthrough: the gateway asks for usage
    assert status == 200 and b'"usage"' not in body and body.endswith(b"data: [DONE]\n\n")
    assert (await h.sim_requests())[-1]["body"]["stream_options"] == {"include_usage": True}
    client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=SPEND, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-5", messages=HI)  # type: ignore[arg-type]
    assert info.value.code == "insufficient_quota" and info.value.type == "insufficient_quota"
    assert "key 'spender' budget (20 tokens per day) is used up (24 tokens today)" in info.value.message
    assert "resets at 2026-12-01T00:00:00Z" in info.value.message
    assert info.value.response.headers["Retry-After"] == str(4 * 3600)
    status, doc, headers = await h.post_json("/v1/messages", {"model": "claude-sonnet-4", "max_tokens": 8,
                                                              "messages": HI}, headers={"x-api-key": SPEND})
    assert status == 429 and doc["error"]["type"] == "rate_limit_error" and headers["Retry-After"] == "14400"
    assert "Budget exhausted: the key 'spender'" in doc["error"]["message"]
    status, doc, headers = await h.post_json("/v1beta/models/gemini-2.5-flash:generateContent",
                                             {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                                             headers={"x-goog-api-key": SPEND})
    assert status == 429 and doc["error"]["status"] == "RESOURCE_EXHAUSTED" and headers["Retry-After"] == "14400"
    assert doc["error"]["details"][0]["retryDelay"] == "14400s" and "spender" in doc["error"]["message"]
    status, doc, headers = await h.post_json("/v1/responses", {"model": "gpt-5", "input": "hi"}, headers=bearer(SPEND))
    assert status == 429 and doc["error"]["type"] == doc["error"]["code"] == "insufficient_quota"
    status, doc, headers = await h.post_json("/api/chat", {"model": "gpt-5", "messages": HI}, headers=bearer(SPEND))
    assert status == 429 and "Budget exhausted" in doc["error"] and headers["Retry-After"] == "14400"
    assert spent(h, SPEND) == [[24, 12_000_000]]  # refused requests charge nothing
    assert (await chat(h, FREE))[0] == 200  # a key without a budget is not held


async def test_the_period_turning_admits_again(h: Harness) -> None:
    for _ in range(2):
        assert (await chat(h, SPEND))[0] == 200
    assert (await chat(h, SPEND))[0] == 429
    clock = h.gateway.budgets.wall
    assert isinstance(clock, Clock)
    clock.now += 4 * 3600 - 1
    assert (await chat(h, SPEND))[0] == 429
    clock.now += 1  # 2026-12-01T00:00:00Z
    assert (await chat(h, SPEND))[0] == 200
    assert spent(h, SPEND) == [[12, 12_000_000]]


async def test_usd_budget_counts_the_cost_at_the_serving_providers_prices(h: Harness) -> None:
    assert [(await chat(h, PAY))[0] for _ in range(3)] == [200, 200, 429]  # $0.012, $0.024 >= $0.02
    assert spent(h, PAY) == [[24, 24_000_000]]
    status, doc, headers = await chat(h, PAY)
    message = doc["error"]["message"]  # type: ignore[index]
    assert "the key 'payer' budget ($0.02 per week) is used up ($0.024 spent this week)" in message
    assert headers["Retry-After"] == str(7 * 86_400 - 20 * 3600)  # type: ignore[index]  # until next Monday


async def test_a_team_budget_is_shared_by_its_keys(h: Harness) -> None:
    assert [(await chat(h, key))[0] for key in (CREW1, CREW2, CREW1)] == [200, 200, 200]  # 36 >= 30 after
    status, doc, headers = await chat(h, CREW2)
    assert status == 429 and "the team 'crew' budget (30 tokens per month)" in doc["error"]["message"]  # type: ignore[index]
    assert "x-ratelimit-limit-requests" not in headers  # type: ignore[operator]  # refused before the limits
    assert (await chat(h, CREW1))[0] == 429
    assert spent(h, CREW1) == [[36, 36_000_000]]


async def test_reload_keeps_the_spend_of_this_period(h: Harness) -> None:
    assert [(await chat(h, SPEND))[0] for _ in range(3)] == [200, 200, 429]
    (h.config_dir / "00-server.yaml").write_text(AUTH.replace("- {name: free", "- {name: added"))
    assert await h.gateway.reload("test"), h.gateway.last_error
    assert (await chat(h, SPEND))[0] == 429  # unchanged: still used up
    (h.config_dir / "00-server.yaml").write_text(AUTH.replace("tokens: 20,", "tokens: 40,"))
    assert await h.gateway.reload("test"), h.gateway.last_error
    assert (await chat(h, SPEND))[0] == 200  # a raised budget: the 24 spent still count
    assert spent(h, SPEND) == [[36, 36_000_000]]
    assert (await chat(h, SPEND))[0] == 200 and (await chat(h, SPEND))[0] == 429  # 48 >= 40


async def test_no_upstream_answer_charges_nothing(h: Harness) -> None:
    await h.faults("*", {"status": 500, "times": -1})
    status, _, _ = await chat(h, SPEND)
    assert status >= 500 and spent(h, SPEND) == [[0, 0]]


async def test_admin_config_shows_budgets(h: Harness) -> None:
    r = await h.request("GET", "/admin/config", headers=bearer(FREE))
    auth = (await r.json())["auth"]
    keys = {k["name"]: k for k in auth["api_keys"]}
    assert keys["spender"]["budget"] == {"period": "day", "tokens": 20}
    assert keys["payer"]["budget"] == {"period": "week", "usd": 0.02} and "budget" not in keys["crew-1"]
    assert auth["team_budgets"] == {"crew": {"period": "month", "tokens": 30}}
    assert SPEND not in await r.text()


@pytest.mark.parametrize(("budget", "message"), [
    ("{period: day}", "budget"),
    ("{tokens: 0, period: day}", "tokens"),
    ("{tokens: 5, period: year}", "period"),
    ("{tokens: 5}", "period"),
])
async def test_a_bad_budget_is_a_located_config_error(h: Harness, budget: str, message: str) -> None:
    (h.config_dir / "00-server.yaml").write_text(AUTH.replace("{tokens: 20, period: day}", budget))
    assert not await h.gateway.reload("test")
    assert h.gateway.last_error is not None
    text = "\n".join(str(e) for e in h.gateway.last_error.errors)
    assert "00-server.yaml:4" in text and message in text, text


async def test_a_usd_budget_without_any_price_is_a_config_error(h: Harness) -> None:
    (h.config_dir / "70-prices.yaml").write_text("{}\n")
    assert not await h.gateway.reload("test")
    assert h.gateway.last_error is not None
    errors = [str(e) for e in h.gateway.last_error.errors]
    assert len(errors) == 1 and "00-server.yaml:7" in errors[0], errors
    assert "api key 'payer' has a usd budget but no price is declared" in errors[0]
