"""The conformance matrix: every client dialect x every upstream dialect, stream and not, text and tools.

Each cell drives the gateway with the official SDK of the client family against the bundled
simulator speaking the upstream dialect, and checks what a user of that SDK reads.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from tests.conftest import Harness

UPSTREAMS = {"gemini": "gemini-2.5-flash", "openai": "gpt-5", "anthropic": "claude-sonnet-4"}
PROMPT = "What is the weather in Paris?"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def _openai(h: Harness) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-test", max_retries=0)


def _anthropic(h: Harness) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=h.url, api_key="sk-test", max_retries=0)


def _genai(h: Harness) -> genai.Client:
    return genai.Client(api_key="sk-test", http_options=gtypes.HttpOptions(base_url=h.url))


# --- one runner per client dialect: returns (text, tool_call_name, tool_call_args) ----------------

async def chat(h: Harness, model: str, stream: bool, tools: bool) -> tuple[str, str | None, Any]:
    c = _openai(h)
    kw: dict[str, Any] = {}
    if tools:
        kw = {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}],
              "tool_choice": "required"}
    msgs = [{"role": "user", "content": PROMPT}]
    if stream:
        async with c.chat.completions.stream(model=model, messages=msgs, **kw) as s:
            async for _ in s:
                pass
            r = await s.get_final_completion()
    else:
        r = await c.chat.completions.create(model=model, messages=msgs, **kw)
    await c.close()
    m = r.choices[0].message
    if m.tool_calls:
        assert r.choices[0].finish_reason == "tool_calls"
        return m.content or "", m.tool_calls[0].function.name, json.loads(m.tool_calls[0].function.arguments)
    assert r.choices[0].finish_reason == "stop"
    return m.content or "", None, None


async def responses(h: Harness, model: str, stream: bool, tools: bool) -> tuple[str, str | None, Any]:
    c = _openai(h)
    kw: dict[str, Any] = {}
    if tools:
        kw = {"tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}],
              "tool_choice": "required"}
    if stream:
        async with c.responses.stream(model=model, input=PROMPT, instructions="be brief", **kw) as s:
            kinds = [ev.type async for ev in s]
            r = await s.get_final_response()
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    else:
        r = await c.responses.create(model=model, input=PROMPT, instructions="be brief", **kw)
    await c.close()
    assert r.status == "completed"
    calls = [o for o in r.output if o.type == "function_call"]
    if calls:
        return r.output_text, calls[0].name, json.loads(calls[0].arguments)
    return r.output_text, None, None


async def completions(h: Harness, model: str, stream: bool, tools: bool) -> tuple[str, str | None, Any]:
    c = _openai(h)
    if stream:
        text = ""
        async for chunk in await c.completions.create(model=model, prompt=PROMPT, stream=True):
            if chunk.choices:
                text += chunk.choices[0].text
    else:
        r = await c.completions.create(model=model, prompt=PROMPT)
        assert r.object == "text_completion"
        text = r.choices[0].text
    await c.close()
    return text, None, None


async def messages(h: Harness, model: str, stream: bool, tools: bool) -> tuple[str, str | None, Any]:
    c = _anthropic(h)
    kw: dict[str, Any] = {}
    if tools:
        kw = {"tools": [{"name": "get_weather", "input_schema": WEATHER}], "tool_choice": {"type": "any"}}
    msgs = [{"role": "user", "content": PROMPT}]
    if stream:
        async with c.messages.stream(model=model, max_tokens=200, messages=msgs, **kw) as s:
            async for _ in s:
                pass
            m = await s.get_final_message()
    else:
        m = await c.messages.create(model=model, max_tokens=200, messages=msgs, **kw)
    await c.close()
    text = "".join(b.text for b in m.content if b.type == "text")
    uses = [b for b in m.content if b.type == "tool_use"]
    if uses:
        assert m.stop_reason == "tool_use"
        return text, uses[0].name, uses[0].input
    assert m.stop_reason == "end_turn"
    return text, None, None


async def gemini(h: Harness, model: str, stream: bool, tools: bool) -> tuple[str, str | None, Any]:
    c = _genai(h)
    config = None
    if tools:
        config = gtypes.GenerateContentConfig(
            tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(
                name="get_weather", parameters_json_schema=WEATHER)])],
            tool_config=gtypes.ToolConfig(function_calling_config=gtypes.FunctionCallingConfig(mode="ANY")),
            automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True))
    if stream:
        text, calls = "", []
        async for chunk in await c.aio.models.generate_content_stream(model=model, contents=PROMPT, config=config):
            text += chunk.text or ""
            calls += chunk.function_calls or []
    else:
        r = await c.aio.models.generate_content(model=model, contents=PROMPT, config=config)
        text, calls = r.text or "", r.function_calls or []
    if calls:
        return text, calls[0].name, calls[0].args
    return text, None, None


CLIENTS = {"openai.chat": chat, "openai.responses": responses, "openai.completions": completions,
           "anthropic.messages": messages, "gemini": gemini}
CELLS = [(c, u, s, t) for c in CLIENTS for u in UPSTREAMS for s in (False, True) for t in (False, True)
         if not (t and c == "openai.completions")]


@pytest.mark.parametrize("client,upstream,stream,tools", CELLS,
                         ids=[f"{c}->{u}-{'stream' if s else 'json'}-{'tools' if t else 'text'}"
                              for c, u, s, t in CELLS])
async def test_cell(gw: Harness, client: str, upstream: str, stream: bool, tools: bool) -> None:
    text, name, args = await CLIENTS[client](gw, UPSTREAMS[upstream], stream, tools)
    seen = (await gw.sim_requests())[-1]
    assert seen["path"] == {"gemini": f"/v1beta/models/{UPSTREAMS['gemini']}:"
                            + ("streamGenerateContent" if stream else "generateContent"),
                            "openai": "/v1/chat/completions", "anthropic": "/v1/messages"}[upstream]
    assert seen["stream"] is stream
    if tools:
        assert name == "get_weather" and isinstance(args, dict) and args.get("city"), (text, name, args)
    else:
        assert name is None
        assert "weather in Paris" in text, text


async def test_model_lists_in_each_dialect(gw: Harness) -> None:
    oa = _openai(gw)
    ids = [m.id async for m in oa.models.list()]
    assert "gpt-4o" in ids
    assert (await oa.models.retrieve("gpt-4o")).id == "gpt-4o"
    await oa.close()
    an = _anthropic(gw)
    page = await an.models.list()
    assert "gpt-4o" in [m.id for m in page.data]
    await an.close()
    g = _genai(gw)
    names = [m.name async for m in await g.aio.models.list()]
    assert "models/gemini-2.5-flash" in names
    assert (await g.aio.models.get(model="gemini-2.5-flash")).name == "models/gemini-2.5-flash"


async def test_count_tokens(gw: Harness) -> None:
    an = _anthropic(gw)
    n = await an.messages.count_tokens(model="claude-sonnet-4", messages=[{"role": "user", "content": PROMPT}])
    assert n.input_tokens > 0
    await an.close()
    g = _genai(gw)
    r = await g.aio.models.count_tokens(model="gemini-2.5-flash", contents=PROMPT)
    assert r.total_tokens == n.input_tokens > 0
