"""Fallback lists and weighted splits in model_mapping, end to end through the simulator's fault injection.

Every trigger (429 after retries, 5xx, a timeout, a dead port, a pool whose accounts all cool, a
context-length 400 from each upstream codec) moves on, stream and non-stream, across the three upstream
dialects; a 400 that is not context length does not; a stream moves on only before its first byte.
X-Mapped-Model names the target that answered and the access log carries the chain walked.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from router.config import load_dir
from router.failures import ProviderFailed
from router.fallback import PlanRunner, session_point
from router.mapping import compile_mapping
from router.plan import DEFAULT_TRIGGERS, Fallback, Split, Target, triggered
from router.registry import UPSTREAM_CODECS, template_filters
from router.snapshot import check
from tests.conftest import FAST_RETRY, Harness, start_gateway
from tests.serving import free_port

GEM_A, GEM_B, OAI, ANT, SLOW = "sim-key-a", "sim-key-b", "sim-key-openai", "sim-key-anthropic", "sim-key-slow"
GEMINI = "simulator/gemini-2.5-flash"
OPENAI = "sim-openai/gpt-4o-mini"
ANTHROPIC = "sim-anthropic/claude-sonnet-4"

MAPPING = f"""
model_mapping:
  exact:
    go-a: [{GEMINI}, {OPENAI}, {ANTHROPIC}]
    ao-g: [{ANTHROPIC}, {OPENAI}, {GEMINI}]
    oa: [{OPENAI}, {ANTHROPIC}]
    dead-first: [dead/gpt-4o, {GEMINI}]
    slow-first: [slow/gemini-2.5-flash, {OPENAI}]
    only-429: {{fallback: [{GEMINI}, {OPENAI}], on: [429]}}
    fast: {{split: {{{GEMINI}: 90, {OPENAI}: 10}}}}
    nested:
      split:
        - {{weight: 1, target: [{GEMINI}, {ANTHROPIC}]}}
        - {{weight: 1, target: [{OPENAI}, {ANTHROPIC}]}}
    list-with-split: [{{split: {{{GEMINI}: 1, {OPENAI}: 1}}}}, {ANTHROPIC}]
  wildcard:
    "fb-*": [simulator/gemini-*, sim-openai/gpt-*]
  default: {GEMINI}
"""

EXTRA_PROVIDERS = """
providers:
  dead:
    dialect: openai
    base_url: http://127.0.0.1:{port}
    template: openai
    timeouts: {{connect: 2s}}
    accounts: [{{email: dead@x, api_key: dead-key}}]
  slow:
    dialect: gemini
    base_url: builtin:simulator
    template: gemini
    timeouts: {{first_byte: 300ms}}
    accounts: [{{email: slow@simulator.local, api_key: sim-key-slow}}]
"""

USER_MSG = [{"role": "user", "content": "hi"}]


def request_for(dialect: str, model: str, stream: bool) -> tuple[str, dict[str, Any]]:
    if dialect == "gemini":
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{model}:{action}", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    if dialect == "anthropic":
        return "/v1/messages", {"model": model, "max_tokens": 50, "messages": USER_MSG, "stream": stream}
    return "/v1/chat/completions", {"model": model, "messages": USER_MSG, "stream": stream}


async def call(h: Harness, model: str, stream: bool = False, dialect: str = "openai",
               headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    path, body = request_for(dialect, model, stream)
    async with h.session.post(h.url + path, json=body, headers=headers or {}) as r:
        return r.status, await r.read(), r.headers


def access_lines(h: Harness) -> list[dict[str, Any]]:
    h.gateway.access_log.flush()
    stream = h.gateway.access_log.stream
    assert isinstance(stream, io.BytesIO)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def last_chain(h: Harness) -> list[str] | None:
    await asyncio.sleep(0.05)  # the access line is written just after the response
    chain: list[str] | None = access_lines(h)[-1]["chain"]
    return chain


def answered(raw: bytes, stream: bool) -> bool:
    """A successful answer (a stream that ends without an error event)."""
    text = raw.decode()
    return ("error" not in text) if stream else "error" not in orjson.loads(raw)


@pytest.fixture
async def h(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    (config_dir / "20-mapping.yaml").write_text(MAPPING)
    (config_dir / "15-fallback.yaml").write_text(EXTRA_PROVIDERS.format(port=free_port()))
    harness = await start_gateway(config_dir)
    harness.gateway.access_log.stream = io.BytesIO()
    harness.gateway.access_log.configure("json", True)
    try:
        yield harness
    finally:
        await harness.close()


# --- every trigger, stream and non-stream ----------------------------------------------------------

TRIGGERS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]], str]] = {
    # name: (model, faults by key, the first target's chain label)
    "429": ("go-a", [(GEM_A, {"status": 429, "retry_after": 1}), (GEM_B, {"status": 429, "retry_after": 1})],
            "429"),
    "5xx": ("go-a", [(GEM_A, {"status": 500, "times": -1}), (GEM_B, {"status": 500, "times": -1})], "500"),
    "503": ("oa", [(OAI, {"status": 503, "times": -1})], "503"),
    "reset": ("ao-g", [(ANT, {"kind": "reset", "times": -1})], "reset"),
    "malformed": ("oa", [(OAI, {"kind": "malformed", "times": -1})], "malformed"),
    "timeout": ("slow-first", [(SLOW, {"kind": "slow_first_byte", "delay": 1.5, "times": -1})], "timeout"),
    "connect_error": ("dead-first", [], "connect_error"),
    "context_length_openai": ("oa", [(OAI, {"status": 400, "code": "context_length_exceeded",
                                            "message": "This model's maximum context length is 128000 tokens."})],
                              "context_length"),
    "context_length_anthropic": ("ao-g", [(ANT, {"status": 400,
                                                 "message": "prompt is too long: 210000 tokens > 200000 maximum"})],
                                 "context_length"),
    "context_length_gemini": ("go-a", [(k, {"status": 400, "message": "The input token count (1200000) exceeds the "
                                            "maximum number of tokens allowed (1048576)."}) for k in (GEM_A, GEM_B)],
                              "context_length"),
}
FIRST = {"go-a": GEMINI, "ao-g": ANTHROPIC, "oa": OPENAI, "dead-first": "dead/gpt-4o",
         "slow-first": "slow/gemini-2.5-flash"}
SECOND = {"go-a": OPENAI, "ao-g": OPENAI, "oa": ANTHROPIC, "dead-first": GEMINI, "slow-first": OPENAI}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("trigger", list(TRIGGERS))
async def test_each_trigger_falls_back(h: Harness, trigger: str, stream: bool) -> None:
    model, faults, label = TRIGGERS[trigger]
    for key, fault in faults:
        await h.faults(key, fault)
    status, raw, headers = await call(h, model, stream)
    assert status == 200, raw
    assert answered(raw, stream), raw
    second = SECOND[model]
    assert headers["X-Mapped-Model"] == second.split("/", 1)[1]  # the target that answered
    assert await last_chain(h) == [f"{FIRST[model]}:{label}", f"{second}:200"]
    line = access_lines(h)[-1]  # limits, budgets and usage read the same fields: the answering target's
    assert (line["provider"], line["upstream_model"]) == tuple(second.split("/", 1))
    assert line["tokens_in"] and line["account"] == h.gateway.current.providers[line["provider"]].pool.accounts[0].email


async def test_every_account_cooling_is_exhausted_and_falls_back(h: Harness) -> None:
    for key in (GEM_A, GEM_B):
        await h.faults(key, {"status": 429, "retry_after": 30})
    status, _, _ = await call(h, "go-a")
    assert status == 200
    assert await last_chain(h) == [f"{GEMINI}:429", f"{OPENAI}:200"]  # both accounts said 429: now cooling
    await h.sim_reset()
    for stream in (False, True):
        status, raw, headers = await call(h, "go-a", stream)
        assert status == 200 and answered(raw, stream), raw
        assert await last_chain(h) == [f"{GEMINI}:exhausted", f"{OPENAI}:200"]
    assert {r["key"] for r in await h.sim_requests()} == {OAI}  # the cooling pool was not asked


# --- across dialects, in any order ------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("model", ["go-a", "ao-g"])
async def test_cross_dialect_chain_to_the_last_target(h: Harness, client: str, model: str, stream: bool) -> None:
    """Two upstream dialects fail with 5xx; the third answers in the client's own dialect."""
    chain = [GEMINI, OPENAI, ANTHROPIC] if model == "go-a" else [ANTHROPIC, OPENAI, GEMINI]
    keys = {GEMINI: (GEM_A, GEM_B), OPENAI: (OAI,), ANTHROPIC: (ANT,)}
    for target in chain[:2]:
        for key in keys[target]:
            await h.faults(key, {"status": 502, "times": -1})
    status, raw, headers = await call(h, model, stream, client)
    assert status == 200, raw
    assert answered(raw, stream), raw
    if not stream:
        doc = orjson.loads(raw)
        assert {"openai": "choices", "anthropic": "content", "gemini": "candidates"}[client] in doc, doc
    else:
        text = raw.decode()
        assert {"openai": "[DONE]", "anthropic": "message_stop", "gemini": "finishReason"}[client] in text, text
    assert headers["X-Mapped-Model"] == chain[2].split("/", 1)[1]
    assert await last_chain(h) == [f"{chain[0]}:502", f"{chain[1]}:502", f"{chain[2]}:200"]
    seen = [r["dialect"] for r in await h.sim_requests()]
    order = {GEMINI: "gemini", OPENAI: "openai", ANTHROPIC: "anthropic"}
    assert list(dict.fromkeys(seen)) == [order[t] for t in chain]  # each re-rendered for its own upstream


# --- what does not fall back ------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_plain_400_does_not_fall_back(h: Harness, stream: bool) -> None:
    await h.faults(OAI, {"status": 400, "message": "Invalid value for 'temperature'."})
    status, raw, headers = await call(h, "oa", stream)
    assert status == 400, raw
    assert "temperature" in orjson.loads(raw)["error"]["message"]
    assert headers["X-Mapped-Model"] == "gpt-4o-mini"
    assert await last_chain(h) == [f"{OPENAI}:400"]
    assert {r["key"] for r in await h.sim_requests()} == {OAI}


async def test_a_policy_without_5xx_does_not_fall_back_on_500(h: Harness) -> None:
    for key in (GEM_A, GEM_B):
        await h.faults(key, {"status": 500, "times": -1})
    status, _, _ = await call(h, "only-429")
    assert status == 500
    assert await last_chain(h) == [f"{GEMINI}:500"]


async def test_the_last_targets_error_goes_out_when_all_fail(h: Harness) -> None:
    await h.faults("*", {"status": 503, "times": -1})
    status, raw, headers = await call(h, "oa")
    assert status == 503, raw
    assert headers["X-Mapped-Model"] == "claude-sonnet-4"
    assert await last_chain(h) == [f"{OPENAI}:503", f"{ANTHROPIC}:503"]


async def test_a_stream_falls_back_only_before_its_first_byte(h: Harness) -> None:
    for key in (GEM_A, GEM_B):
        await h.faults(key, {"kind": "reset", "after_chunks": 1})
    status, raw, headers = await call(h, "go-a", stream=True)
    assert status == 200  # the headers went out with the first chunk
    assert 'data: {"error":' in raw.decode()  # the stream's own error event, in the client's dialect
    assert headers["X-Mapped-Model"] == "gemini-2.5-flash"
    assert await last_chain(h) == [f"{GEMINI}:200"]
    assert {r["dialect"] for r in await h.sim_requests()} == {"gemini"}  # no other target was asked


async def test_single_target_has_no_chain(h: Harness) -> None:
    status, _, headers = await call(h, "plain-model")
    assert status == 200 and headers["X-Mapped-Model"] == "gemini-2.5-flash"
    assert await last_chain(h) is None


# --- wildcard, nesting, splits ----------------------------------------------------------------------

async def test_wildcard_substitutes_inside_every_target(h: Harness) -> None:
    for key in (GEM_A, GEM_B):
        await h.faults(key, {"status": 500, "times": -1})
    status, _, headers = await call(h, "fb-4o")
    assert status == 200 and headers["X-Mapped-Model"] == "gpt-4o"
    assert await last_chain(h) == ["simulator/gemini-4o:500", "sim-openai/gpt-4o:200"]


async def test_split_arm_falls_back_within_itself_then_to_other_arms(h: Harness) -> None:
    sid = next(s for s in (f"s{i}" for i in range(100)) if session_point(s, 2) == 0)  # the gemini arm
    for key in (GEM_A, GEM_B):
        await h.faults(key, {"status": 500, "times": -1})
    status, _, headers = await call(h, "nested", headers={"x-session-id": sid})
    assert status == 200 and headers["X-Mapped-Model"] == "claude-sonnet-4"  # its own fallback
    assert await last_chain(h) == [f"{GEMINI}:500", f"{ANTHROPIC}:200"]
    await h.faults(ANT, {"status": 500, "times": -1})
    status, _, headers = await call(h, "nested", headers={"x-session-id": sid})
    assert status == 200 and headers["X-Mapped-Model"] == "gpt-4o-mini"  # then the other arm
    assert await last_chain(h) == [f"{GEMINI}:500", f"{ANTHROPIC}:500", f"{OPENAI}:200"]


async def test_fallback_list_with_a_split_entry(h: Harness) -> None:
    for key in (GEM_A, GEM_B, OAI):
        await h.faults(key, {"status": 500, "times": -1})
    status, _, headers = await call(h, "list-with-split")
    assert status == 200 and headers["X-Mapped-Model"] == "claude-sonnet-4"
    chain = await last_chain(h)
    assert chain is not None and chain[-1] == f"{ANTHROPIC}:200"
    assert sorted(chain[:2]) == sorted([f"{GEMINI}:500", f"{OPENAI}:500"])  # both arms, then the list


async def test_sticky_sessions_stay_on_one_arm(h: Harness) -> None:
    for sid in ("alice", "bob", "carol", "dave"):
        served = set()
        for _ in range(6):
            status, _, headers = await call(h, "fast", headers={"x-session-id": sid})
            assert status == 200
            served.add(headers["X-Mapped-Model"])
        assert len(served) == 1, (sid, served)
        split = h.gateway.current.mapper.resolve("fast")
        assert isinstance(split, Split)
        expect = split.arms[split.arm_at(session_point(sid, split.total))].plan
        assert isinstance(expect, Target) and served == {expect.model}


async def test_split_proportions_end_to_end(h: Harness) -> None:
    h.runner.dispatcher.engine.plans.rand = random.Random(1)  # this process's source, seeded
    counts: Counter[str] = Counter()
    for _ in range(100):
        status, _, headers = await call(h, "fast")
        assert status == 200
        counts[headers["X-Mapped-Model"]] += 1
    assert 78 <= counts["gemini-2.5-flash"] <= 98, counts  # 90% +- 4 standard deviations (3 %)


def test_split_proportions_with_a_seeded_random() -> None:
    mapper = compile_mapping({"exact": {"fast": {"split": {"a/x": 90, "b/y": 10}}}})
    split = mapper.resolve("fast")
    assert isinstance(split, Split)
    runner = PlanRunner(serve=None, rand=random.Random(42))  # type: ignore[arg-type]  # choose() only
    n = 20_000
    counts = Counter(runner.choose(split, None) for _ in range(n))
    share = counts[0] / n
    assert abs(share - 0.9) < 4 * (0.9 * 0.1 / n) ** 0.5 + 1e-9, counts  # within 4 standard deviations
    one, two = (PlanRunner(serve=None, rand=random.Random(7)) for _ in range(2))  # type: ignore[arg-type]
    assert [one.choose(split, None) for _ in range(100)] == [two.choose(split, None) for _ in range(100)]


def test_sticky_point_is_deterministic_and_spread() -> None:
    assert session_point("alice", 100) == session_point("alice", 100)
    hits = Counter(session_point(f"user-{i}", 2) for i in range(2000))
    assert 850 <= hits[0] <= 1150, hits


# --- compiled plans and policy ----------------------------------------------------------------------

def test_plans_compile_and_describe() -> None:
    mapper = compile_mapping({
        "fallback_on": [429, "exhausted"],
        "exact": {"a": ["p/x", {"split": [{"weight": 3, "target": ["q/y", "r/z"]}, {"weight": 1, "target": "s/w"}]}],
                  "b": {"fallback": ["p/x", "q/y"], "on": ["5xx"]}},
        "wildcard": {"m-*": {"split": {"p/*": 1, "q/*-b": 1}}},
    })
    a = mapper.resolve("a")
    assert isinstance(a, Fallback) and a.on == frozenset({429, "exhausted"}) and a.rule == "exact:a"
    assert [t.name for t in a.targets()] == ["p/x", "q/y", "r/z", "s/w"]
    on = ", on: [429, exhausted]"
    assert a.describe() == f"{{fallback: [p/x, {{split: {{{{fallback: [q/y, r/z]{on}}}: 3, s/w: 1}}{on}}}]{on}}}"
    c = compile_mapping({"exact": {"c": ["p/x", {"split": {"q/y": 2, "r/z": 1}}]}}).resolve("c")
    assert c is not None and c.describe() == "[p/x, {split: {q/y: 2, r/z: 1}}]"
    b = mapper.resolve("b")
    assert isinstance(b, Fallback) and b.on == frozenset({"5xx"})
    m = mapper.resolve("m-1")
    assert isinstance(m, Split) and [t.name for t in m.targets()] == ["p/1", "q/1-b"]
    assert all(t.rule == "wildcard:m-*" for t in m.targets())
    assert m.primary == Target("p", "1", "wildcard:m-*")


@pytest.mark.parametrize(("outcome", "reason", "moves"), [
    (429, None, True), (500, None, True), (529, None, True), ("timeout", None, True),
    ("connect_error", None, True), ("exhausted", None, True), ("circuit_open", None, True),
    ("reset", None, True), ("malformed", None, True), (400, "context_length", True),
    (400, None, False), (401, None, False), (404, None, False), (413, None, False),
])
def test_default_triggers(outcome: int | str, reason: str | None, moves: bool) -> None:
    assert triggered(DEFAULT_TRIGGERS, outcome, reason) is moves


def test_no_other_4xx_moves_on_whatever_the_policy() -> None:
    assert not triggered(frozenset({400, 404, "5xx"}), 404, None)
    assert triggered(frozenset({503}), 503, None) and not triggered(frozenset({503}), 500, None)


# --- config errors, located -------------------------------------------------------------------------

BROKEN = [
    ("exact: {m: [openai/gpt-4o, nowhere/x]}", "/model_mapping/exact/m/1",
     "mapping target 'nowhere/x' names unknown provider 'nowhere'"),
    ("exact: {m: {split: {openai/gpt-4o: 1, nowhere/x: 1}}}", "/model_mapping/exact/m/split/nowhere~1x",
     "names unknown provider 'nowhere'"),
    ("exact: {m: {split: [{weight: 1, target: [openai/a, {fallback: [nowhere/x]}]}]}}",
     "/model_mapping/exact/m/split/0/target/1/fallback/0", "names unknown provider 'nowhere'"),
    ("default: [openai/gpt-4o, nowhere/x]", "/model_mapping/default/1", "names unknown provider 'nowhere'"),
    ("exact: {m: {split: {openai/gpt-4o: 0}}}", "/model_mapping/exact/m/split/openai~1gpt-4o",
     "less than the minimum of 1"),
    ("exact: {m: [openai/gpt-4o, nope]}", "/model_mapping/exact/m/1", "does not match"),
    ("exact: {m: []}", "/model_mapping/exact/m", "should be non-empty"),
    ("exact: {m: {fallback: [openai/a], on: [404]}}", "/model_mapping/exact/m/on/0", "expected exhausted"),
    ("exact: {m: {fallback: [openai/a], when: [429]}}", "/model_mapping/exact/m/when", "unknown field 'when'"),
    ("exact: {m: [[[[openai/a]]]]}", "/model_mapping/exact/m/0/0/0/0", "nested deeper than 4 levels"),
    ("exact: {m: " + str([f"openai/m{i}" for i in range(9)]).replace("'", "") + "}", "/model_mapping/exact/m",
     "is too long"),
]


@pytest.mark.parametrize(("entry", "pointer", "message"), BROKEN, ids=[b[1] + ":" + b[2][:20] for b in BROKEN])
def test_config_errors_are_located(tmp_path: Path, config_dir: Path, entry: str, pointer: str, message: str) -> None:
    text = "model_mapping:\n  " + entry + "\n"
    (config_dir / "20-mapping.yaml").write_text(text)
    errors = check(config_dir, template_filters(), env={})
    hits = [e for e in errors if e.pointer == pointer and message in e.message]
    assert hits, [str(e) for e in errors]
    assert hits[0].file == "20-mapping.yaml" and hits[0].line == 2
    assert load_dir(config_dir, {}).data["model_mapping"]  # the rest of the config loads


async def test_header_context_has_the_chain(config_dir: Path) -> None:
    (config_dir / "20-mapping.yaml").write_text(MAPPING)
    (config_dir / "15-fallback.yaml").write_text(EXTRA_PROVIDERS.format(port=free_port()))
    (config_dir / "60-headers.yaml").write_text(
        'response_headers:\n  X-Mapped-Model: "{{ upstream_model }}"\n  X-Fallbacks: "{{ fallbacks }}"\n'
        '  X-Chain: "{{ chain | join(\' \') }}"\n')
    h = await start_gateway(config_dir)
    try:
        await h.faults(OAI, {"status": 500, "times": -1})
        status, _, headers = await call(h, "oa")
        assert status == 200
        assert headers["X-Fallbacks"] == "1" and headers["X-Mapped-Model"] == "claude-sonnet-4"
        assert headers["X-Chain"] == f"{OPENAI}:500 {ANTHROPIC}:200"
        status, _, headers = await call(h, "plain-model")
        assert headers["X-Fallbacks"] == "0" and "X-Chain" not in headers  # empty values are left out
    finally:
        await h.close()


# --- each upstream codec reads its own context-length error; the runner on its own ---------------

@pytest.mark.parametrize(("dialect", "body", "reason"), [
    ("openai", {"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}},
     "context_length"),
    ("openai", {"error": {"message": "bad temperature", "type": "invalid_request_error", "code": None}}, None),
    ("anthropic", {"type": "error", "error": {"type": "invalid_request_error",
                                              "message": "prompt is too long: 210000 tokens > 200000 maximum"}},
     "context_length"),
    ("anthropic", {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: required"}},
     None),
    ("gemini", {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "The input token count (1200000) "
                          "exceeds the maximum number of tokens allowed (1048576)."}}, "context_length"),
    ("gemini", [{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "The input token count (9) "
                           "exceeds the maximum number of tokens allowed (8)."}}], "context_length"),
    ("gemini", {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid JSON payload."}}, None),
], ids=["openai", "openai-other", "anthropic", "anthropic-other", "gemini", "gemini-array", "gemini-other"])
def test_upstream_codecs_classify_context_length(dialect: str, body: Any, reason: str | None) -> None:
    failure = UPSTREAM_CODECS[dialect].parse_failure(400, {}, orjson.dumps(body))
    assert (failure.outcome, failure.reason) == (400, reason)


async def test_runner_moves_on_circuit_open_and_keeps_the_chain() -> None:
    """What the circuit breaker raises for an open circuit moves on by default; a plain 4xx stops."""
    tried: list[str] = []

    async def serve(x: Any, target: Target, request: Any) -> Any:
        tried.append(target.name)
        if target.provider == "open":
            raise ProviderFailed("circuit_open", "unavailable", "circuit open")
        if target.provider == "bad":
            raise ProviderFailed(422, "invalid_request", "no", status=422)
        return SimpleNamespace(status=200)

    mapper = compile_mapping({"exact": {"a": ["open/m", "ok/m"], "b": ["bad/m", "ok/m"]}})
    runner = PlanRunner(serve)
    x: Any = SimpleNamespace(chain=None, response=None, request_id="r", canonical=None)
    plan = mapper.resolve("a")
    assert plan is not None
    assert (await runner.run(x, plan, None)).status == 200  # type: ignore[arg-type]
    assert x.chain == ["open/m:circuit_open", "ok/m:200"] and tried == ["open/m", "ok/m"]
    plan = mapper.resolve("b")
    assert plan is not None
    with pytest.raises(ProviderFailed):
        await runner.run(x, plan, None)  # type: ignore[arg-type]
    assert x.chain == ["bad/m:422"]
