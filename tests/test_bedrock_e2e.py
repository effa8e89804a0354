"""Every client family through the gateway to the Bedrock fake, which checks each request's SigV4 signature:
the official SDKs, stream and not, text and tools, usage, and the failures (throttling, refused
signatures, exceptions and broken frames mid-stream)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from router.sim import sigv4_check as keys
from tests.conftest import FAST_RETRY, Harness, start_gateway
from tests.test_matrix import CLIENTS

MODEL = "bedrock-claude"
UPSTREAM_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PROMPT = "What is the weather in Paris?"
A, B = keys.TEST_ACCESS_KEY_ID, keys.TEST_SESSION_KEY_ID
BEDROCK = f"""
providers:
  sim-bedrock:
    dialect: bedrock
    base_url: builtin:simulator
    template: bedrock
    accounts:
      - email: aws-a@simulator.local
        credential: {{type: aws_sigv4, access_key_id: {A}, secret_access_key: "{keys.TEST_SECRET_ACCESS_KEY}",
                     region: us-east-1}}
      - email: aws-b@simulator.local
        credential: {{type: aws_sigv4, access_key_id: {B}, secret_access_key: "{keys.TEST_SESSION_SECRET}",
                     session_token: "{keys.TEST_SESSION_TOKEN}", region: us-west-2}}
  sim-bedrock-wrong:
    dialect: bedrock
    base_url: builtin:simulator
    template: bedrock
    accounts:
      - email: aws-wrong@simulator.local
        credential: {{type: aws_sigv4, access_key_id: {A}, secret_access_key: not-the-secret, region: us-east-1}}
model_mapping:
  exact:
    {MODEL}: sim-bedrock/{UPSTREAM_MODEL}
    bedrock-wrong: sim-bedrock-wrong/{UPSTREAM_MODEL}
"""


@pytest.fixture
async def bgw(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    (config_dir / "80-bedrock.yaml").write_text(BEDROCK)
    h = await start_gateway(config_dir)
    try:
        yield h
    finally:
        await h.close()


def _openai(h: Harness) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-test", max_retries=0)


CELLS = [(c, s, t) for c in CLIENTS for s in (False, True) for t in (False, True)
         if not (t and c == "openai.completions")]


@pytest.mark.parametrize("client,stream,tools", CELLS,
                         ids=[f"{c}-{'stream' if s else 'json'}-{'tools' if t else 'text'}" for c, s, t in CELLS])
async def test_cell(bgw: Harness, client: str, stream: bool, tools: bool) -> None:
    text, name, args = await CLIENTS[client](bgw, MODEL, stream, tools)
    seen = (await bgw.sim_requests())[-1]
    assert seen["dialect"] == "bedrock" and seen["status"] == 200
    assert seen["path"] == f"/model/{UPSTREAM_MODEL}/" + ("converse-stream" if stream else "converse")
    assert seen["stream"] is stream and seen["key"] in (A, B)
    if tools:
        assert name == "get_weather" and isinstance(args, dict) and args.get("city"), (text, name, args)
        assert seen["body"]["toolConfig"]["toolChoice"] == {"any": {}}
    else:
        assert name is None and "weather in Paris" in text, text


async def test_both_accounts_sign_a_session_token_too(bgw: Harness) -> None:
    c = _openai(bgw)
    for _ in range(4):
        await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    await c.close()
    assert {r["key"] for r in await bgw.sim_requests()} == {A, B}


async def test_usage_and_body(bgw: Harness) -> None:
    c = _openai(bgw)
    r = await c.chat.completions.create(model=MODEL, max_tokens=50, temperature=0.2, stop=["zzz"],
                                        messages=[{"role": "system", "content": "be brief"},
                                                  {"role": "user", "content": "Hello there"}])
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    chunks = [ch async for ch in await c.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Hello there"}])]
    await c.close()
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == r.usage.total_tokens - 2
    body = (await bgw.sim_requests())[0]["body"]
    assert body["system"] == [{"text": "be brief"}]
    assert body["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2, "stopSequences": ["zzz"]}
    assert body["messages"] == [{"role": "user", "content": [{"text": "Hello there"}]}]


async def test_tool_round_trip_anthropic(bgw: Harness) -> None:
    c = anthropic.AsyncAnthropic(base_url=bgw.url, api_key="sk", max_retries=0)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools: Any = [{"name": "get_weather", "input_schema": schema}]
    msgs: Any = [{"role": "user", "content": PROMPT}]
    m = await c.messages.create(model=MODEL, max_tokens=100, messages=msgs, tools=tools)
    use = next(b for b in m.content if b.type == "tool_use")
    assert m.stop_reason == "tool_use" and m.usage.input_tokens > 0
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21C"}]}]
    m2 = await c.messages.create(model=MODEL, max_tokens=100, messages=msgs, tools=tools)
    await c.close()
    assert "Tool said: 21C" in m2.content[0].text  # type: ignore[union-attr]
    sent = (await bgw.sim_requests())[-1]["body"]["messages"]
    assert sent[1]["content"][0]["toolUse"]["toolUseId"] == use.id
    assert sent[2]["content"] == [{"toolResult": {"toolUseId": use.id, "content": [{"text": "21C"}]}}]


async def test_throttling_everywhere_reaches_the_client(bgw: Harness) -> None:
    c = _openai(bgw)
    for key in (A, B):
        await bgw.faults(key, {"status": 429, "message": "Too many requests, please wait before trying again."})
    with pytest.raises(openai.RateLimitError, match="Too many requests"):
        await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    await c.close()
    assert [r["status"] for r in await bgw.sim_requests()] == [429, 429]


@pytest.mark.parametrize("status", [429, 503, 500])
async def test_one_failure_is_retried(bgw: Harness, status: int) -> None:
    await bgw.faults("*", {"status": status})
    c = _openai(bgw)
    r = await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    await c.close()
    assert r.choices[0].message.content
    assert [x["status"] for x in await bgw.sim_requests()] == [status, 200]


async def test_a_wrong_signature_is_refused(bgw: Harness) -> None:
    c = _openai(bgw)
    with pytest.raises(openai.PermissionDeniedError, match="signature we calculated does not match"):
        await c.chat.completions.create(model="bedrock-wrong", messages=[{"role": "user", "content": "hi"}])
    await c.close()


async def test_context_length_is_a_400(bgw: Harness) -> None:
    c = _openai(bgw)
    for key in (A, B):
        await bgw.faults(key, {"status": 400, "message": "Input is too long for requested model."})
    with pytest.raises(openai.BadRequestError, match="too long"):
        await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    await c.close()


async def test_exception_before_content_is_retried(bgw: Harness) -> None:
    await bgw.faults("*", {"kind": "exception", "status": 429, "after_chunks": 0})
    c = _openai(bgw)
    chunks = [ch async for ch in await c.chat.completions.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": "Hello"}])]
    await c.close()
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).startswith("Echo: Hello")
    assert [r["fault"] for r in await bgw.sim_requests()] == ["exception", None]


@pytest.mark.parametrize("kind,status,expected", [("exception", 503, "Simulated ServiceUnavailableException"),
                                                  ("malformed", 0, "malformed")])
async def test_failure_mid_stream_ends_the_stream_with_an_error(bgw: Harness, kind: str, status: int,
                                                               expected: str) -> None:
    fault = {"kind": kind, "after_chunks": 1, **({"status": status} if status else {})}
    await bgw.faults(A, fault)
    await bgw.faults(B, fault)
    c = anthropic.AsyncAnthropic(base_url=bgw.url, api_key="sk", max_retries=0)
    text = ""
    with pytest.raises(anthropic.APIStatusError, match=expected):
        async with c.messages.stream(model=MODEL, max_tokens=100,
                                     messages=[{"role": "user", "content": "Hello"}]) as s:
            async for ev in s:
                if ev.type == "text":
                    text += ev.text
    await c.close()
    assert text.startswith("Echo: Hello")


async def test_no_secret_reaches_a_log_an_error_or_an_admin_view(bgw: Harness, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = (keys.TEST_SECRET_ACCESS_KEY, keys.TEST_SESSION_SECRET, keys.TEST_SESSION_TOKEN, "not-the-secret")
    c = _openai(bgw)
    await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await c.chat.completions.create(model="bedrock-wrong", messages=[{"role": "user", "content": "hi"}])
    await c.close()
    texts = [str(refused.value), caplog.text]
    for path in ("/admin/config", "/admin/accounts"):
        async with await bgw.request("GET", path) as r:
            texts.append(await r.text())
    async with await bgw.request("POST", "/admin/explain", json={"model": MODEL}) as r:
        texts.append(await r.text())
        assert r.status == 200 and "sim-bedrock" in texts[-1], texts[-1]
    for broken, field in ((BEDROCK.replace("region: us-west-2", "region: Not-A-Region"), "region"),
                          (BEDROCK.replace(keys.TEST_SESSION_SECRET, keys.TEST_SESSION_SECRET + " x"),
                           "secret_access_key")):
        (bgw.config_dir / "80-bedrock.yaml").write_text(broken)
        async with await bgw.request("POST", "/admin/reload") as r:
            texts.append(await r.text())
            assert r.status != 200 and field in texts[-1], texts[-1]
    assert not [s for s in secrets for t in texts if s in t]


async def test_the_readme_section_serves_through_the_fake(config_dir: Path) -> None:
    """The README's Bedrock YAML, as written, with the fake's test keys in the environment."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
                 if b.startswith("# routes.d/80-bedrock.yaml"))
    (config_dir / "80-bedrock.yaml").write_text(block)
    env = {"BEDROCK_BASE_URL": "builtin:simulator", "AWS_ACCESS_KEY_ID": B,
           "AWS_SECRET_ACCESS_KEY": keys.TEST_SESSION_SECRET, "AWS_SESSION_TOKEN": keys.TEST_SESSION_TOKEN}
    h = await start_gateway(config_dir, env=env)
    try:
        text, _, _ = await CLIENTS["anthropic.messages"](h, "claude-bedrock", True, False)
        assert "weather in Paris" in text
        seen = (await h.sim_requests())[-1]
        assert (seen["key"], seen["status"]) == (B, 200)
        assert seen["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse-stream"
    finally:
        await h.close()


def test_the_shipped_example_is_the_readme_one_commented_out() -> None:
    """The shipped config carries the Bedrock provider commented out (the default stays offline), and
    uncommented it is the README's provider."""
    from ruamel.yaml import YAML

    root = Path(__file__).resolve().parent.parent
    shipped = (root / "router" / "routes.d" / "10-providers.yaml").read_text()
    lines = shipped[shipped.index("  # bedrock:"):].splitlines()
    end = next(i for i, line in enumerate(lines) if i and not line.startswith("  #   "))  # its block only
    block = "\n".join(line.replace("# ", "", 1) for line in lines[:end])
    provider = YAML(typ="safe").load("providers:\n" + block)["providers"]
    readme = (root / "README.md").read_text()
    readme_block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
                        if b.startswith("# routes.d/80-bedrock.yaml"))
    assert provider == YAML(typ="safe").load(readme_block)["providers"]
    assert "bedrock" not in YAML(typ="safe").load(shipped)["providers"]


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_reaches_a_claude_model_and_comes_back_signed(bgw: Harness, stream: bool) -> None:
    c = anthropic.AsyncAnthropic(base_url=bgw.url, api_key="sk", max_retries=0)
    kw: Any = {"model": MODEL, "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024},
               "messages": [{"role": "user", "content": "Hello"}]}
    if stream:
        async with c.messages.stream(**kw) as s:
            m = await s.get_final_message()
    else:
        m = await c.messages.create(**kw)
    await c.close()
    thought = m.content[0]
    assert thought.type == "thinking" and thought.thinking.startswith("Thinking about: Hello")
    assert thought.signature == "c2ltLWJlZHJvY2stc2lnbmF0dXJl"
    assert m.content[1].type == "text" and m.content[1].text.startswith("Echo: Hello")
    body = (await bgw.sim_requests())[-1]["body"]
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert body["inferenceConfig"] == {"maxTokens": 2000}
