"""Usage (``router.usage``, ``GET /admin/usage``): rows from non-stream and stream answers through the
simulator, cost from a price table, errors, grouping, filters, ranges, CSV, the row cap, day turns."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from router.canonical import Usage
from router.exchange import Exchange
from router.prices import compile_prices
from router.usage import DAY, MAX_ROWS, OTHER, UsageLedger, UsageSettings
from tests.conftest import Harness, start_gateway

A_KEY, B_KEY, ADMIN_KEY = "sk-usage-alpha-1", "sk-usage-beta-2", "sk-usage-admin-3"
AUTH = f"""\
auth:
  mode: strict
  api_keys:
    - {{name: alpha, key: "{A_KEY}", team: team-a}}
    - {{name: beta, key: "{B_KEY}", models: ["gpt-4o", "gpt-5"], limits: {{rpm: 3}}}}
  teams:
    team-a: {{}}
  admin_keys:
    - {{name: ops, key_sha256: "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"}}
prices:
  simulator/gemini-2.5-flash: {{input: 1.0, output: 2.0}}
  "sim-openai/*": {{input: 3.0, output: 5.0}}
"""
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY0 = "2027-01-15"
HI = [{"role": "user", "content": "hi there usage"}]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def h(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "00-server.yaml").write_text(AUTH)
    (config_dir / "70-prices.yaml").unlink()  # the test's own prices, above
    harness = await start_gateway(config_dir)
    harness.gateway.usage.clock = Clock(T0)
    try:
        yield harness
    finally:
        await harness.close()


async def usage(h: Harness, query: str = "", **headers: str) -> tuple[int, Any, Any]:
    await asyncio.sleep(0.05)  # recorded once the response is on its way (a call_soon)
    async with h.session.get(h.url + "/admin/usage" + query, headers={**bearer(ADMIN_KEY), **headers}) as r:
        text = await r.text()
        return r.status, (json.loads(text) if r.content_type == "application/json" else text), r.headers


def client(h: Harness, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=h.url + "/v1", max_retries=0)


# --- through the gateway ------------------------------------------------------------------------------


async def test_non_stream_and_stream_answers_are_counted_with_their_cost(h: Harness) -> None:
    status, body, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI},
                                        headers=bearer(A_KEY))
    assert status == 200
    reported = body["usage"]
    # the openai SDK streaming without stream_options: the gateway asks the upstream for usage, the
    # client's stream carries no usage chunk
    stream = await client(h, B_KEY).chat.completions.create(model="gpt-5", messages=HI, stream=True)  # type: ignore[arg-type]
    chunks = [chunk async for chunk in stream]
    assert chunks and all(chunk.usage is None for chunk in chunks)
    upstream = [r for r in await h.sim_requests() if r["stream"]]
    assert upstream[-1]["dialect"] == "openai" and upstream[-1]["body"]["stream_options"] == {"include_usage": True}

    status, doc, _ = await usage(h, "?group_by=key,team,model")
    assert status == 200 and doc["source"] == "local" and doc["complete"] is True
    assert doc["from"] == "2027-01-09" and doc["to"] == DAY0 and doc["group_by"] == ["key", "team", "model"]
    rows = {r["key"]: r for r in doc["rows"]}
    assert set(rows) == {"alpha", "beta"}
    alpha, beta = rows["alpha"], rows["beta"]
    assert alpha["team"] == "team-a" and beta["team"] is None and alpha["model"] == beta["model"] == "gpt-5"
    assert (alpha["requests"], alpha["errors"], beta["requests"], beta["errors"]) == (1, 0, 1, 0)
    assert (alpha["input_tokens"], alpha["output_tokens"]) == (reported["prompt_tokens"], reported["completion_tokens"])
    # the same prompt streamed: the simulator reports the same tokens
    assert (beta["input_tokens"], beta["output_tokens"]) == (alpha["input_tokens"], alpha["output_tokens"]) != (0, 0)
    # sim-openai/* (the provider that served, the upstream model) at $3 in, $5 out per million
    cost = (alpha["input_tokens"] * 3.0 + alpha["output_tokens"] * 5.0) / 1e6
    assert alpha["cost_usd"] == pytest.approx(cost) and beta["cost_usd"] == pytest.approx(cost)
    assert doc["totals"]["requests"] == 2 and doc["totals"]["cost_usd"] == pytest.approx(2 * cost)


async def test_a_gemini_served_answer_is_priced_by_its_provider(h: Harness) -> None:
    status, body, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI},
                                        headers=bearer(A_KEY))
    assert status == 200
    _, doc, _ = await usage(h, "?group_by=model")
    (row,) = doc["rows"]
    # gpt-4o -> gemini/gemini-2.5-flash, served by its fallback "simulator": simulator/gemini-2.5-flash
    assert row["input_tokens"] == body["usage"]["prompt_tokens"]
    assert row["cost_usd"] > 0
    assert row["cost_usd"] == pytest.approx((row["input_tokens"] * 1.0 + row["output_tokens"] * 2.0) / 1e6)


async def test_reasoning_tokens_and_the_provider_that_served_price_the_row(h: Harness) -> None:
    body = {"model": "o4-mini", "messages": HI, "reasoning_effort": "high"}
    status, answer, _ = await h.post_json("/v1/chat/completions", body, headers=bearer(A_KEY))
    assert status == 200
    reported = answer["usage"]
    _, doc, _ = await usage(h, "?group_by=model")
    (row,) = doc["rows"]
    assert row["model"] == "o4-mini"
    assert row["reasoning_tokens"] == reported["completion_tokens_details"]["reasoning_tokens"] > 0
    assert row["output_tokens"] == reported["completion_tokens"]
    assert row["cost_usd"] == pytest.approx((row["input_tokens"] * 3 + row["output_tokens"] * 5) / 1e6)


async def test_errors_count_refusals_and_only_proxied_requests_count(h: Harness) -> None:
    for _ in range(4):  # beta: rpm 3, the fourth is a 429
        await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI}, headers=bearer(B_KEY))
    status, _, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-4.1", "messages": HI},
                                     headers=bearer(B_KEY))
    assert status == 403  # a model beta may not use
    await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": "nope"}, headers=bearer(A_KEY))
    for path in ("/healthz", "/v1/models", "/admin/config"):
        async with h.session.get(h.url + path, headers=bearer(A_KEY)):
            pass
    await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI}, headers=bearer("sk-wrong"))
    _, doc, _ = await usage(h, "?group_by=key")
    rows = {r["key"]: r for r in doc["rows"]}
    assert set(rows) == {"alpha", "beta"}  # no row for the wrong key, health, model lists or admin
    assert (rows["beta"]["requests"], rows["beta"]["errors"]) == (5, 2)
    assert (rows["alpha"]["requests"], rows["alpha"]["errors"]) == (1, 1)
    assert rows["alpha"]["input_tokens"] == 0


async def test_filters_group_by_range_and_csv(h: Harness) -> None:
    clock = h.gateway.usage.clock
    assert isinstance(clock, Clock)
    for day_offset, key, model in ((0, A_KEY, "gpt-4o"), (0, A_KEY, "gemini-2.5-pro"), (1, B_KEY, "gpt-4o"),
                                   (1, A_KEY, "gpt-4o")):
        clock.now = T0 + day_offset * DAY
        status, _, _ = await h.post_json("/v1/chat/completions", {"model": model, "messages": HI}, headers=bearer(key))
        assert status == 200
    _, doc, _ = await usage(h)  # default: the last 7 days by day, key and model
    assert doc["group_by"] == ["day", "key", "model"] and doc["to"] == "2027-01-16"
    assert [(r["day"], r["key"], r["model"]) for r in doc["rows"]] == [
        (DAY0, "alpha", "gemini-2.5-pro"), (DAY0, "alpha", "gpt-4o"), ("2027-01-16", "alpha", "gpt-4o"),
        ("2027-01-16", "beta", "gpt-4o")]
    _, doc, _ = await usage(h, f"?from={DAY0}&to={DAY0}&group_by=")
    assert doc["rows"] == [{k: v for k, v in doc["totals"].items()}] and doc["totals"]["requests"] == 2
    _, doc, _ = await usage(h, "?group_by=day&key=alpha&model=gpt-4o,gemini-2.5-pro")
    assert [(r["day"], r["requests"]) for r in doc["rows"]] == [(DAY0, 2), ("2027-01-16", 1)]
    _, doc, _ = await usage(h, "?group_by=team&team=-")
    assert doc["rows"] == [{"team": None, **{k: v for k, v in doc["rows"][0].items() if k != "team"}}]
    assert doc["rows"][0]["requests"] == 1  # beta has no team
    _, doc, _ = await usage(h, "?group_by=key&key=beta&key=alpha&from=2027-01-16")
    assert [(r["key"], r["requests"]) for r in doc["rows"]] == [("alpha", 1), ("beta", 1)]

    status, text, headers = await usage(h, "?group_by=day,key&format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["X-Usage-Source"] == "local"
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["day", "key", "requests", "errors", "input_tokens", "output_tokens", "cached_tokens",
                        "reasoning_tokens", "cost_usd"]
    assert [r[:3] for r in table[1:]] == [[DAY0, "alpha", "2"], ["2027-01-16", "alpha", "1"],
                                          ["2027-01-16", "beta", "1"]]
    assert text.endswith("\r\n") and all(len(r[-1].split(".")[1]) == 9 for r in table[1:])
    _, same, _ = await usage(h, "?group_by=day,key", Accept="text/csv")
    assert same == text


@pytest.mark.parametrize(("query", "param"), [
    ("?from=2027-13-01", "from"), ("?to=yesterday", "to"), ("?from=2027-01-16&to=2027-01-15", "from"),
    ("?from=2025-01-01&to=2027-01-15", "from"), ("?group_by=day,week", "group_by"), ("?group_by=day,day", "group_by"),
    ("?format=xml", "format"), ("?form=2027-01-01", "form"),
])
async def test_a_bad_parameter_is_a_400_naming_it(h: Harness, query: str, param: str) -> None:
    status, doc, _ = await usage(h, query)
    assert status == 400 and doc["error"]["param"] == param, doc


async def test_admin_usage_needs_the_admin_key_and_shows_no_key_material(h: Harness) -> None:
    await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI}, headers=bearer(A_KEY))
    async with h.session.get(h.url + "/admin/usage", headers=bearer(A_KEY)) as r:
        assert r.status == 401
    _, doc, _ = await usage(h, "?group_by=day,key,team,model")
    text = json.dumps(doc)
    for secret in (A_KEY, B_KEY, ADMIN_KEY, hashlib.sha256(A_KEY.encode()).hexdigest()):
        assert secret not in text


async def test_usage_is_kept_across_a_reload(h: Harness) -> None:
    await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI}, headers=bearer(A_KEY))
    (h.config_dir / "80-usage.yaml").write_text("usage: {retention_days: 30, max_rows_per_day: 100}\n")
    assert await h.gateway.reload("test")
    assert h.gateway.usage.settings == UsageSettings(30, 100)
    _, doc, _ = await usage(h, "?group_by=key")
    assert [(r["key"], r["requests"]) for r in doc["rows"]] == [("alpha", 1)]


async def test_auth_off_counts_under_no_key(config_dir: Path) -> None:
    harness = await start_gateway(config_dir)
    try:
        await harness.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI})
        await asyncio.sleep(0.05)
        async with harness.session.get(harness.url + "/admin/usage?group_by=key,team&format=csv") as r:
            table = list(csv.reader(io.StringIO(await r.text())))
        assert table[1][:3] == ["-", "-", "1"]
        async with harness.session.get(harness.url + "/admin/usage?key=-&group_by=key") as r:
            assert (await r.json())["rows"][0]["key"] is None
    finally:
        await harness.close()


# --- the ledger alone -----------------------------------------------------------------------------------


def exchange(key: str | None = "k", team: str | None = "t", model: str | None = "m", usage: Usage | None = None,
             provider: str = "p", upstream: str = "u", prices: dict[str, Any] | None = None) -> Any:
    """What ``UsageLedger.record`` reads of an Exchange."""
    x = SimpleNamespace(
        codec=object(), key=SimpleNamespace(name=key, team=team) if key is not None else None, client_model=model,
        usage=usage, provider=SimpleNamespace(name=provider), upstream_model=upstream, cost_nano=None,
        snapshot=SimpleNamespace(prices=compile_prices(prices or {})))
    x.cost = partial(Exchange.cost, x)  # the real Exchange.cost over these fields
    return x


def totals(ledger: UsageLedger) -> dict[tuple[str, str, str, str], list[int]]:
    return {(day, *rk): counters for day, rk, counters in ledger.local("0000-00-00", "9999-99-99")}


def test_a_row_counts_tokens_cached_reasoning_and_cost() -> None:
    ledger = UsageLedger(Clock(T0))
    u = Usage(input_tokens=1000, output_tokens=500, cached_tokens=400, reasoning_tokens=200)
    prices = {"p/u": {"input": 2.5, "output": 10.0, "cached_input": 1.25}}
    ledger.record(exchange(usage=u, prices=prices), 200)
    ledger.record(exchange(prices=prices), 500)
    assert totals(ledger) == {(DAY0, "k", "t", "m"): [2, 1, 1000, 500, 400, 200, 7_000_000]}
    ledger.record(SimpleNamespace(codec=None), 200)  # not a proxied request
    assert totals(ledger)[(DAY0, "k", "t", "m")][0] == 2


def test_the_cost_is_the_price_tables_computed_once() -> None:
    """Budgets and usage both count ``Exchange.cost``: the price table's nano-dollars, computed once."""
    import random

    rng = random.Random(13)
    prices = {"p/u": {"input": 2.5, "output": 10.0, "cached_input": 1.25}, "p/v": {"input": 0.3, "output": 2.5}}
    table = compile_prices(prices)
    for _ in range(200):
        model = rng.choice(["u", "v", "none"])
        inp = rng.randrange(0, 2_000_000)
        u = Usage(inp, rng.randrange(0, 100_000), rng.randrange(0, inp + 10), 0)
        ledger = UsageLedger(Clock(T0))
        x = exchange(usage=u, upstream=model, prices=prices)
        ledger.record(x, 200)
        assert totals(ledger)[(DAY0, "k", "t", "m")][6] == table.cost("p", model, u) == x.cost_nano
        x.usage = None  # computed once: a second read does not price again
        assert x.cost() == table.cost("p", model, u)


def test_a_full_day_counts_new_models_as_other_and_the_day_turns() -> None:
    clock = Clock(T0)
    ledger = UsageLedger(clock, UsageSettings(max_rows_per_day=10))
    for i in range(25):
        ledger.record(exchange(model=f"m{i}"), 200)
    ledger.record(exchange(model="m3"), 200)  # a row the day already has keeps counting
    rows = totals(ledger)
    assert len(rows) == 11 and rows[(DAY0, "k", "t", OTHER)][0] == 15 and rows[(DAY0, "k", "t", "m3")][0] == 2
    clock.now = T0 + 16 * 3600  # 00:00:00 UTC: the next day, a new set of rows
    ledger.record(exchange(model="m0"), 200)
    assert totals(ledger)[("2027-01-16", "k", "t", "m0")][0] == 1
    clock.now = T0 + 16 * 3600 - 1  # 23:59:59 of day 0 (a clock set back): that day's rows, still full
    ledger.record(exchange(model="late"), 200)
    assert totals(ledger)[(DAY0, "k", "t", OTHER)][0] == 16


def test_old_days_go_after_the_retention_and_the_process_bound() -> None:
    clock = Clock(T0)
    ledger = UsageLedger(clock, UsageSettings(retention_days=3))
    for d in range(6):
        clock.now = T0 + d * DAY
        ledger.record(exchange(), 200)
    assert sorted({day for day, *_ in totals(ledger)}) == ["2027-01-18", "2027-01-19", "2027-01-20"]
    assert ledger.rows_kept == 3
    big = UsageLedger(Clock(T0), UsageSettings(max_rows_per_day=MAX_ROWS))
    big.days = {"2027-01-01": {("k", "t", str(i)): [1] + [0] * 13 for i in range(MAX_ROWS)}}
    big.rows_kept = MAX_ROWS
    big.record(exchange(), 200)  # today's first row: over the bound, the oldest day goes
    assert list(big.days) == [DAY0] and big.rows_kept == 1


def test_names_with_the_field_separator_or_lone_surrogates_are_cleaned() -> None:
    ledger = UsageLedger(Clock(T0))
    ledger.record(exchange(model="a\x1fb\ud800"), 200)
    assert list(totals(ledger)) == [(DAY0, "k", "t", "a\ufffdb?")]


async def test_the_readme_example_shows_every_field_of_the_answer(h: Harness) -> None:
    from tests.test_readme import README

    await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI}, headers=bearer(A_KEY))
    _, doc, _ = await usage(h, "?group_by=key,model")
    part = README[README.index("**Usage.**"):README.index("### providers")]
    for name in [*doc, *doc["rows"][0], *doc["totals"]]:
        assert f'"{name}"' in part, name


# --- a client's own usage: GET /v1/usage ------------------------------------------------------------------


async def test_a_client_sees_its_own_usage_and_limits_left(h: Harness) -> None:
    for key, model in ((B_KEY, "gpt-4o"), (B_KEY, "gpt-5"), (A_KEY, "gpt-4o")):
        status, _, _ = await h.post_json("/v1/chat/completions", {"model": model, "messages": HI}, headers=bearer(key))
        assert status == 200
    await asyncio.sleep(0.05)
    async with h.session.get(h.url + "/v1/usage", headers=bearer(B_KEY)) as r:
        assert r.status == 200
        doc = await r.json()
    assert (doc["key"], doc["team"], doc["group_by"]) == ("beta", None, ["day", "model"])
    assert [(row["day"], row["model"], row["requests"]) for row in doc["rows"]] == [(DAY0, "gpt-4o", 1),
                                                                                  (DAY0, "gpt-5", 1)]
    assert doc["limits"]["requests"]["limit"] == 3 and doc["limits"]["requests"]["remaining"] == 1
    assert doc["limits"]["tokens"] is None
    async with h.session.get(h.url + "/v1/usage?group_by=&format=csv", headers=bearer(A_KEY)) as r:
        table = list(csv.reader(io.StringIO(await r.text())))
    assert table[0][0] == "requests" and table[1][0] == "1"  # alpha's own: one request, no limits
    for query, param in (("?key=beta", "key"), ("?group_by=key", "group_by"), ("?team=-", "team")):
        async with h.session.get(h.url + "/v1/usage" + query, headers=bearer(A_KEY)) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == param
    async with h.session.get(h.url + "/v1/usage") as r:
        assert r.status == 401


async def test_a_client_sees_what_is_left_of_its_budgets(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text(AUTH.replace(
        "team: team-a}", "team: team-a, budget: {tokens: 1000, period: day}}").replace(
        "team-a: {}", "team-a: {budget: {usd: 2.5, period: month}}"))
    (config_dir / "70-prices.yaml").unlink()
    harness = await start_gateway(config_dir)
    harness.gateway.budgets.wall = Clock(T0)
    try:
        status, body, _ = await harness.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI},
                                                  headers=bearer(A_KEY))
        assert status == 200
        used = body["usage"]["total_tokens"]
        nano = body["usage"]["prompt_tokens"] * 3000 + body["usage"]["completion_tokens"] * 5000  # sim-openai/*
        await asyncio.sleep(0.05)
        async with harness.session.get(harness.url + "/v1/usage", headers=bearer(A_KEY)) as r:
            doc = await r.json()
        own, team = doc["budgets"]
        assert own == {"scope": "key", "name": "alpha", "period": "day", "tokens": 1000, "spent_tokens": used,
                       "spent_usd": pytest.approx(nano / 1e9), "remaining_tokens": 1000 - used,
                       "resets_at": "2027-01-16T00:00:00Z"}
        assert (team["scope"], team["name"], team["usd"], team["resets_at"]) == ("team", "team-a", 2.5,
                                                                                "2027-02-01T00:00:00Z")
        assert team["remaining_usd"] == pytest.approx(2.5 - nano / 1e9) and "remaining_tokens" not in team
        async with harness.session.get(harness.url + "/v1/usage", headers=bearer(B_KEY)) as r:
            assert (await r.json())["budgets"] == []
    finally:
        await harness.close()


async def test_without_auth_v1_usage_asks_for_a_key(config_dir: Path) -> None:
    harness = await start_gateway(config_dir)
    try:
        async with harness.session.get(harness.url + "/v1/usage") as r:
            assert r.status == 401 and "send one" in (await r.json())["error"]["message"]
    finally:
        await harness.close()
