"""The official ``ollama`` Python client against the gateway, over every upstream dialect of the bundled
simulator: chat and generate, stream and not, tools with a result round trip, thinking, the model
list and info, the version, errors and a failure after the first byte."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import ollama
import orjson
import pytest

from tests.conftest import Harness, start_gateway

UPSTREAMS = {"gemini": "gemini-2.5-flash", "openai": "gpt-5", "anthropic": "claude-sonnet-4"}
UPSTREAM_PATHS = {"gemini": "/v1beta/models/gemini-2.5-flash:", "openai": "/v1/chat/completions",
                  "anthropic": "/v1/messages"}
PROMPT = "Tell me about Paris"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}},
                   "required": ["city"]}}}


def client(h: Harness) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=h.url)


async def upstream_saw(h: Harness, upstream: str, stream: bool) -> None:
    seen = (await h.sim_requests())[-1]
    assert seen["path"].startswith(UPSTREAM_PATHS[upstream]), seen["path"]
    assert seen["stream"] is stream


async def run_chat(c: ollama.AsyncClient, model: str, stream: bool, **kw: Any) -> tuple[ollama.Message, Any]:
    """The assistant message (stream chunks folded as a user of the client would) and the last object."""
    if not stream:
        r = await c.chat(model=model, stream=False, **kw)
        return r.message, r
    content, thinking, calls, last = "", "", [], None
    async for part in await c.chat(model=model, stream=True, **kw):
        content += part.message.content or ""
        thinking += part.message.thinking or ""
        calls += part.message.tool_calls or []
        last = part
    return ollama.Message(role="assistant", content=content, thinking=thinking or None, tool_calls=calls or None), last


@pytest.mark.parametrize("stream", [False, True], ids=["json", "ndjson"])
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_chat(gw: Harness, upstream: str, stream: bool) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]
    msg, last = await run_chat(client(gw), UPSTREAMS[upstream], stream, messages=messages)
    assert msg.content and PROMPT in msg.content and not msg.tool_calls
    assert last.done is True and last.done_reason == "stop" and last.model == UPSTREAMS[upstream]
    assert last.prompt_eval_count and last.eval_count and last.total_duration is not None
    await upstream_saw(gw, upstream, stream)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "ndjson"])
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_generate(gw: Harness, upstream: str, stream: bool) -> None:
    c = client(gw)
    if stream:
        parts = [p async for p in await c.generate(model=UPSTREAMS[upstream], prompt=PROMPT, stream=True)]
        text, last = "".join(p.response or "" for p in parts), parts[-1]
        assert len(parts) > 2 and all(not p.done for p in parts[:-1])
    else:
        last = await c.generate(model=UPSTREAMS[upstream], prompt=PROMPT, system="be brief")
        text = last.response or ""
    assert PROMPT in text
    assert last.done is True and last.done_reason == "stop" and last.eval_count
    await upstream_saw(gw, upstream, stream)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "ndjson"])
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_tool_call_and_result_round_trip(gw: Harness, upstream: str, stream: bool) -> None:
    c, model = client(gw), UPSTREAMS[upstream]
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    msg, last = await run_chat(c, model, stream, messages=messages, tools=[WEATHER_TOOL])
    assert msg.tool_calls and len(msg.tool_calls) == 1, msg
    call = msg.tool_calls[0].function
    assert call.name == "get_weather" and call.arguments == {"city": "Paris"}  # an object, not a JSON string
    assert last.done_reason == "stop"
    # the client's own history: the assistant message as it came back (no ids), then the result by name
    messages += [msg, {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"}]
    answer, _ = await run_chat(c, model, stream, messages=messages, tools=[WEATHER_TOOL])
    assert not answer.tool_calls and answer.content and "sunny, 21 C" in answer.content, answer


@pytest.mark.parametrize("upstream", ["gemini", "anthropic"])
async def test_think(gw: Harness, upstream: str) -> None:
    c = client(gw)
    msg, _ = await run_chat(c, UPSTREAMS[upstream], False, messages=[{"role": "user", "content": PROMPT}], think=True)
    assert msg.thinking and PROMPT in msg.thinking
    msg, _ = await run_chat(c, UPSTREAMS[upstream], True, messages=[{"role": "user", "content": PROMPT}], think="high")
    assert msg.thinking and msg.content
    r = await c.generate(model=UPSTREAMS[upstream], prompt=PROMPT, think=True)
    assert r.thinking and r.response


async def test_json_format_and_options(gw: Harness) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = await client(gw).chat(model="gpt-5", messages=[{"role": "user", "content": PROMPT}], format=schema,
                              options={"temperature": 0.1, "num_predict": 50, "seed": 7})
    assert r.message.content and r.message.content.startswith("{")
    seen = (await gw.sim_requests())[-1]["body"]
    assert seen["temperature"] == 0.1 and seen["seed"] == 7 and seen["response_format"]["type"] == "json_schema"
    r2 = await client(gw).generate(model="gpt-5", prompt="count words", options={"num_predict": 2})
    assert r2.done_reason == "length" and r2.eval_count == 2


async def test_sync_client_streams_too(gw: Harness) -> None:
    def run() -> list[ollama.ChatResponse]:
        with ollama.Client(host=gw.url) as c:
            return list(c.chat(model="claude-sonnet-4", messages=[{"role": "user", "content": PROMPT}], stream=True))

    parts = await asyncio.to_thread(run)  # the gateway's loop keeps serving while the sync client waits
    assert parts[-1].done and PROMPT in "".join(p.message.content or "" for p in parts)


async def test_tags_show_version_and_root(gw: Harness) -> None:
    c = client(gw)
    names = [m.model for m in (await c.list()).models]
    assert "gpt-4o" in names and "gemini-2.5-flash" in names
    shown = await c.show("gpt-4o")
    assert shown.capabilities and "tools" in shown.capabilities
    assert (await c.show("gpt-4o:latest")).modelinfo == shown.modelinfo
    async with gw.session.get(gw.url + "/api/version") as r:
        assert r.status == 200 and (await r.json())["version"]
    async with gw.session.get(gw.url + "/") as r:
        assert r.status == 200 and await r.text() == "Ollama is running"
    async with gw.session.head(gw.url + "/") as r:
        assert r.status == 200
    async with gw.session.post(gw.url + "/api/chat", json={"model": "gpt-4o", "messages": [
            {"role": "user", "content": "hi"}]}) as r:  # no "stream": Ollama streams by default
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        assert (await r.text()).count("\n") > 2


async def test_errors_carry_the_gateway_message_and_status(config_dir: Path) -> None:
    (config_dir / "20-mapping.yaml").write_text("model_mapping:\n  exact: {gpt-4o: gemini/gemini-2.5-flash}\n")
    h = await start_gateway(config_dir)
    try:
        c = client(h)
        for call in (c.chat(model="nope", messages=[{"role": "user", "content": "x"}]),
                     c.generate(model="nope", prompt="x"), c.show("nope")):
            with pytest.raises(ollama.ResponseError) as e:
                await call
            assert e.value.status_code == 404 and "'nope'" in e.value.error, e.value
        with pytest.raises(ollama.ResponseError) as e:
            await c.chat(model="gpt-4o", messages=[{"role": "user", "content": "x"}], think="hard")
        assert e.value.status_code == 400 and e.value.error.startswith("think:")
        async with h.session.post(h.url + "/api/pull", json={"model": "x"}) as r:  # no such route: Ollama's form
            assert r.status == 404 and set(await r.json()) == {"error"}
    finally:
        await h.close()


@pytest.mark.parametrize("fault", ["reset", "malformed"])
@pytest.mark.parametrize("endpoint", ["chat", "generate"])
async def test_failure_mid_stream_reaches_the_client(config_dir: Path, endpoint: str, fault: str) -> None:
    h = await start_gateway(config_dir, sim_options={"chunks": 6})
    try:
        await h.faults("*", {"kind": fault, "after_chunks": 2})
        c = client(h)
        if endpoint == "chat":
            parts = await c.chat(model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], stream=True)
        else:
            parts = await c.generate(model="gpt-4o", prompt=PROMPT, stream=True)
        got: list[Any] = []
        with pytest.raises(ollama.ResponseError) as e:
            async for part in parts:
                got.append(part)  # noqa: PERF401 - a comprehension would lose what arrived before the error
        assert not any(p.done for p in got)  # the error line ends it, never a done
        assert got  # what arrived before the fault reached the client (a malformed chunk read
        # together with good ones keeps those too)
        assert "upstream" in e.value.error, e.value
        assert len(await h.sim_requests()) == 1  # no retry once the client had bytes
    finally:
        await h.close()


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_images_reach_the_upstream(gw: Harness, upstream: str) -> None:
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")  # a PNG's head
    r = await client(gw).chat(model=UPSTREAMS[upstream], messages=[
        {"role": "user", "content": "What is in this picture?", "images": [png]}])
    assert r.message.content
    seen = orjson.dumps((await gw.sim_requests())[-1]["body"]).decode()
    assert base64.b64encode(png).decode() in seen and "image/png" in seen


async def test_api_keys_ride_in_the_clients_authorization_header(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text("auth:\n  mode: strict\n  api_keys:\n    - {name: a, key: sk-a}\n")
    h = await start_gateway(config_dir)
    try:
        with pytest.raises(ollama.ResponseError) as e:
            await client(h).list()
        assert e.value.status_code == 401 and "API key" in e.value.error
        keyed = ollama.AsyncClient(host=h.url, headers={"Authorization": "Bearer sk-a"})  # or OLLAMA_API_KEY
        assert (await keyed.chat(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])).message.content
    finally:
        await h.close()


@pytest.mark.parametrize("endpoint", ["chat", "generate"])
async def test_loading_a_model_is_answered_without_an_upstream(gw: Harness, endpoint: str) -> None:
    """What ``ollama run`` sends first: no messages, or an empty prompt (``keep_alive: 0`` unloads)."""
    c, before = client(gw), len(await gw.sim_requests())
    for keep_alive, reason in ((None, "load"), (0, "unload")):
        if endpoint == "chat":
            r: Any = await c.chat(model="gpt-4o", messages=[], keep_alive=keep_alive)
            assert r.message.content == ""
        else:
            r = await c.generate(model="gpt-4o", keep_alive=keep_alive)
            assert r.response == ""
        assert r.done is True and r.done_reason == reason and r.model == "gpt-4o"
    assert len(await gw.sim_requests()) == before  # nothing went upstream


async def test_loading_an_unknown_model_is_a_404(config_dir: Path) -> None:
    (config_dir / "20-mapping.yaml").write_text("model_mapping:\n  exact: {gpt-4o: gemini/gemini-2.5-flash}\n")
    h = await start_gateway(config_dir)
    try:
        with pytest.raises(ollama.ResponseError) as e:
            await client(h).generate(model="nope")
        assert e.value.status_code == 404 and "'nope'" in e.value.error
    finally:
        await h.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "ndjson"])
async def test_durations_are_the_requests_own(gw: Harness, stream: bool) -> None:
    started = time.monotonic_ns()
    _, last = await run_chat(client(gw), "gpt-4o", stream, messages=[{"role": "user", "content": PROMPT}])
    took = time.monotonic_ns() - started
    assert 0 < last.total_duration <= took and last.eval_duration <= took, (last.total_duration, took)
