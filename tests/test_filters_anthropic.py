"""Template filters: canonical request pieces → Anthropic Messages request fields."""

from __future__ import annotations

from typing import Any

import pytest

from router.canonical import CanonicalRequest
from router.client_codecs import anthropic_messages as am
from router.filters import anthropic as flt


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def call(cid: str, name: str, args: str) -> dict[str, Any]:
    return {"type": "tool_call", "id": cid, "name": name, "arguments": args}


def result(cid: str, content: str, is_error: bool = False) -> dict[str, Any]:
    return {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": cid,
                                         "name": "f", "content": content,
                                         "is_error": is_error}]}


MESSAGE_CASES = [
    ("empty", None, []),
    ("plain", [{"role": "user", "content": [text("hi")]},
               {"role": "assistant", "content": [text("yo")]}],
     [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
      {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}]),
    ("string-content", [{"role": "user", "content": "hi"}],
     [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    ("merge-same-role", [{"role": "user", "content": [text("a")]},
                         {"role": "user", "content": [text("b")]}],
     [{"role": "user", "content": [text("a"), text("b")]}]),
    ("empty-text-and-turns-dropped", [{"role": "user", "content": [text("")]},
                                      {"role": "user", "content": [text("x")]},
                                      {"role": "assistant", "content": []}],
     [{"role": "user", "content": [text("x")]}]),
    ("tool-round", [
        {"role": "user", "content": [text("q")]},
        {"role": "assistant", "content": [text("calling"), call("c1", "f", '{"a":1}'),
                                          call("c2", "g", "")]},
        result("c1", "r1"), result("c2", "boom", is_error=True),
        {"role": "user", "content": [text("thanks")]}],
     [{"role": "user", "content": [text("q")]},
      {"role": "assistant", "content": [
          text("calling"), {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
          {"type": "tool_use", "id": "c2", "name": "g", "input": {}}]},
      {"role": "user", "content": [
          {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
          {"type": "tool_result", "tool_use_id": "c2", "content": "boom", "is_error": True},
          text("thanks")]}]),
    ("tool-results-first", [{"role": "user", "content": [text("before")]}, result("c1", "r")],
     [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "r"},
                                   text("before")]}]),
    ("empty-tool-result", [result("c1", "")],
     [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1"}]}]),
    ("bad-arguments", [{"role": "assistant", "content": [call("c", "f", "[1]"),
                                                         call("d", "g", "{no")]}],
     [{"role": "assistant", "content": [
         {"type": "tool_use", "id": "c", "name": "f", "input": {"arguments": "[1]"}},
         {"type": "tool_use", "id": "d", "name": "g", "input": {"arguments": "{no"}}]}]),
    ("images", [{"role": "user", "content": [
        {"type": "image", "url": "https://x/a.png", "media_type": None, "data": None},
        {"type": "image", "url": None, "media_type": "image/jpeg", "data": "QUJD"},
        {"type": "image", "url": "data:image/webp;base64,WFla", "media_type": None, "data": None},
        {"type": "image", "url": None, "media_type": None, "data": "Zg=="},
        {"type": "image", "url": None, "media_type": "image/png", "data": None}]}],
     [{"role": "user", "content": [
         {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}},
         {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                      "data": "QUJD"}},
         {"type": "image", "source": {"type": "base64", "media_type": "image/webp",
                                      "data": "WFla"}},
         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                      "data": "Zg=="}}]}]),
    ("thinking", [{"role": "assistant", "content": [
        {"type": "thinking", "text": "signed", "signature": "s1"},
        {"type": "thinking", "text": "unsigned", "signature": None},
        {"type": "thinking", "text": "", "signature": "opaque", "redacted": True},
        text("answer")]}],
     [{"role": "assistant", "content": [
         {"type": "thinking", "thinking": "signed", "signature": "s1"},
         {"type": "redacted_thinking", "data": "opaque"}, text("answer")]}]),
    ("only-unsigned-thinking-dropped", [
        {"role": "user", "content": [text("a")]},
        {"role": "assistant", "content": [{"type": "thinking", "text": "x", "signature": None}]},
        {"role": "user", "content": [text("b")]}],
     [{"role": "user", "content": [text("a"), text("b")]}]),
    ("wrong-role-parts-dropped", [
        {"role": "user", "content": [call("c", "f", "{}"), text("u")]},
        {"role": "assistant", "content": [{"type": "image", "url": "https://i"}, text("a")]}],
     [{"role": "user", "content": [text("u")]}, {"role": "assistant", "content": [text("a")]}]),
    ("junk-tolerated", [None, "x", {"role": "user", "content": 5},
                        {"role": "user", "content": [None, {"type": "audio"}, text("ok")]}],
     [{"role": "user", "content": [text("ok")]}]),
    ("system-role-as-user", [{"role": "system", "content": [text("s")]}],
     [{"role": "user", "content": [text("s")]}]),
]


@pytest.mark.parametrize("messages,expected", [c[1:] for c in MESSAGE_CASES],
                         ids=[c[0] for c in MESSAGE_CASES])
def test_anthropic_messages(messages: Any, expected: list[Any]) -> None:
    assert flt.anthropic_messages(messages) == expected


ROUND_TRIP = [
    ("text", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    ("tools", [
        {"role": "user", "content": [{"type": "text", "text": "weather"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "s"},
            {"type": "redacted_thinking", "data": "r"},
            {"type": "tool_use", "id": "a", "name": "f", "input": {"x": [1, {"y": None}]}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "ok", "is_error": True},
            {"type": "text", "text": "next"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/gif",
                                         "data": "R0lG"}}]}]),
]


@pytest.mark.parametrize("messages", [c[1] for c in ROUND_TRIP], ids=[c[0] for c in ROUND_TRIP])
def test_round_trip_through_dialect(messages: list[Any]) -> None:
    req = am.decode_request({"model": "m", "max_tokens": 1, "messages": messages})
    assert flt.anthropic_messages(req.messages) == messages


@pytest.mark.parametrize("system,expected", [(None, None), ("", None), ("be kind", "be kind")],
                         ids=["none", "empty", "text"])
def test_anthropic_system(system: str | None, expected: str | None) -> None:
    assert flt.anthropic_system(system) == expected


TOOL_CASES = [
    ("none", None, None),
    ("empty", [], None),
    ("full", [{"name": "f", "description": "d", "parameters": {"type": "object",
                                                              "properties": {"a": {}}}}],
     [{"name": "f", "description": "d",
       "input_schema": {"type": "object", "properties": {"a": {}}}}]),
    ("defaults", [{"name": "g", "description": None, "parameters": None}],
     [{"name": "g", "input_schema": {"type": "object", "properties": {}}}]),
    ("untyped-schema", [{"name": "h", "parameters": {"properties": {"x": {}}}}],
     [{"name": "h", "input_schema": {"type": "object", "properties": {"x": {}}}}]),
    ("nameless-skipped", [{"description": "x"}, "junk"], None),
]


@pytest.mark.parametrize("tools,expected", [c[1:] for c in TOOL_CASES], ids=[c[0] for c in TOOL_CASES])
def test_anthropic_tools(tools: Any, expected: Any) -> None:
    assert flt.anthropic_tools(tools) == expected


def test_default_schema_is_not_shared() -> None:
    first = flt.anthropic_tools([{"name": "a"}])
    assert first is not None
    first[0]["input_schema"]["properties"]["x"] = 1
    second = flt.anthropic_tools([{"name": "b"}])
    assert second is not None
    assert second[0]["input_schema"] == {"type": "object", "properties": {}}


TOOLS = [{"name": "f", "description": None, "parameters": None}]
CHOICE_CASES = [
    ("none-default", None, None, TOOLS, None),
    ("none-serial", None, False, TOOLS, {"type": "auto", "disable_parallel_tool_use": True}),
    ("none-serial-tools-unknown", None, False, ..., None),
    ("none-serial-no-tools", None, False, None, None),
    ("auto", "auto", None, TOOLS, {"type": "auto"}),
    ("auto-tools-unknown", "auto", None, ..., {"type": "auto"}),
    ("auto-no-tools", "auto", None, [], None),
    ("auto-parallel-true", "auto", True, TOOLS, {"type": "auto"}),
    ("none", "none", False, TOOLS, {"type": "none"}),
    ("required", "required", None, TOOLS, {"type": "any"}),
    ("required-serial", "required", False, ...,
     {"type": "any", "disable_parallel_tool_use": True}),
    ("named", {"name": "f"}, None, TOOLS, {"type": "tool", "name": "f"}),
    ("named-serial", {"name": "f"}, False, TOOLS,
     {"type": "tool", "name": "f", "disable_parallel_tool_use": True}),
    ("named-empty", {"name": ""}, None, TOOLS, None),
    ("unknown", "sometimes", None, TOOLS, None),
]


@pytest.mark.parametrize("choice,parallel,tools,expected", [c[1:] for c in CHOICE_CASES],
                         ids=[c[0] for c in CHOICE_CASES])
def test_anthropic_tool_choice(choice: Any, parallel: bool | None, tools: Any,
                               expected: Any) -> None:
    if tools is ...:  # the template did not pass the tools
        assert flt.anthropic_tool_choice(choice, parallel) == expected
    else:
        assert flt.anthropic_tool_choice(choice, parallel, tools) == expected


THINKING_CASES = [
    ("none", None, None),
    ("not-dict", "high", None),
    ("budget", {"effort": None, "budget": 5000}, 5000),
    ("budget-raised", {"budget": 100}, 1024),
    ("budget-zero-off", {"budget": 0}, None),
    ("budget-wins", {"effort": "low", "budget": 3000}, 3000),
    ("low", {"effort": "low"}, 1024),
    ("minimal", {"effort": "minimal"}, 1024),
    ("medium", {"effort": "medium"}, 8192),
    ("high", {"effort": "high"}, 24576),
    ("max", {"effort": "max"}, 32768),
    ("effort-none", {"effort": "none"}, None),
    ("unknown-effort", {"effort": "galaxy"}, 8192),
    ("unset", {"effort": None, "budget": None}, 8192),
    ("bool-budget-ignored", {"budget": True, "effort": "high"}, 24576),
]


@pytest.mark.parametrize("reasoning,budget", [c[1:] for c in THINKING_CASES],
                         ids=[c[0] for c in THINKING_CASES])
def test_anthropic_thinking(reasoning: Any, budget: int | None) -> None:
    expected = None if budget is None else {"type": "enabled", "budget_tokens": budget}
    assert flt.anthropic_thinking(reasoning) == expected


@pytest.mark.parametrize("tool_choice,enabled", [(None, True), ("auto", True), ("none", True),
                                                 ("required", False), ({"name": "f"}, False)],
                         ids=["unset", "auto", "none", "required", "named"])
def test_thinking_off_with_forced_tool(tool_choice: Any, enabled: bool) -> None:
    out = flt.anthropic_thinking({"effort": "low"}, tool_choice)
    assert (out is not None) == enabled


def req(**kw: Any) -> CanonicalRequest:
    return CanonicalRequest(model="m", messages=[], **kw)


MAX_TOKEN_CASES = [
    ("default", req(), 4096),
    ("given", req(max_tokens=300), 300),
    ("thinking-low-fits", req(max_tokens=2000, reasoning={"effort": "low"}), 2000),
    ("thinking-raised", req(max_tokens=1000, reasoning={"effort": "medium"}), 9192),
    ("thinking-default", req(reasoning={"effort": "high"}), 4096 + 24576),
    ("thinking-equal", req(max_tokens=8192, reasoning={"budget": 8192}), 16384),
    ("dict-request", {"max_tokens": 50}, 50),
    ("bad-value", {"max_tokens": "50"}, 4096),
]


@pytest.mark.parametrize("request_,expected", [c[1:] for c in MAX_TOKEN_CASES],
                         ids=[c[0] for c in MAX_TOKEN_CASES])
def test_anthropic_max_tokens(request_: Any, expected: int) -> None:
    out = flt.anthropic_max_tokens(request_)
    assert out == expected
    thinking = flt.anthropic_thinking(getattr(request_, "reasoning", None))
    if thinking:
        assert out > thinking["budget_tokens"]


TEMPERATURE_CASES = [
    ("unset", req(), None),
    ("kept", req(temperature=0.3), 0.3),
    ("clamped", req(temperature=1.8), 1.0),
    ("thinking-drops", req(temperature=0.3, reasoning={"effort": "low"}), None),
    ("thinking-off-keeps", req(temperature=0.3, reasoning={"effort": "none"}), 0.3),
]


@pytest.mark.parametrize("request_,expected", [c[1:] for c in TEMPERATURE_CASES],
                         ids=[c[0] for c in TEMPERATURE_CASES])
def test_anthropic_temperature(request_: Any, expected: float | None) -> None:
    assert flt.anthropic_temperature(request_) == expected


SAMPLING_CASES = [
    ("top-p-unset", flt.anthropic_top_p, req(), None),
    ("top-p-kept", flt.anthropic_top_p, req(top_p=0.5), 0.5),
    ("top-p-clamped", flt.anthropic_top_p, req(top_p=3), 1.0),
    ("top-p-thinking-raised", flt.anthropic_top_p, req(top_p=0.5, reasoning={"budget": 2000}),
     0.95),
    ("top-p-thinking-kept", flt.anthropic_top_p, req(top_p=0.97, reasoning={"budget": 2000}),
     0.97),
    ("top-p-bool", flt.anthropic_top_p, {"top_p": True}, None),
    ("top-k-unset", flt.anthropic_top_k, req(), None),
    ("top-k-kept", flt.anthropic_top_k, req(top_k=40), 40),
    ("top-k-thinking-dropped", flt.anthropic_top_k, req(top_k=40, reasoning={"effort": "high"}),
     None),
    ("top-k-negative", flt.anthropic_top_k, req(top_k=-1), None),
]


@pytest.mark.parametrize("fn,request_,expected", [c[1:] for c in SAMPLING_CASES],
                         ids=[c[0] for c in SAMPLING_CASES])
def test_sampling_filters(fn: Any, request_: Any, expected: Any) -> None:
    assert fn(request_) == expected


OUTPUT_CASES = [
    ("none", None, None),
    ("text", {"type": "text", "schema": None}, None),
    ("json-object", {"type": "json_object", "schema": None},
     {"format": {"type": "json_schema", "schema": {"type": "object"}}}),
    ("json-schema", {"type": "json_schema", "schema": {"type": "object", "properties": {}},
                     "name": "x", "strict": True},
     {"format": {"type": "json_schema", "schema": {"type": "object", "properties": {}}}}),
    ("json-schema-no-schema", {"type": "json_schema"},
     {"format": {"type": "json_schema", "schema": {"type": "object"}}}),
]


@pytest.mark.parametrize("fmt,expected", [c[1:] for c in OUTPUT_CASES],
                         ids=[c[0] for c in OUTPUT_CASES])
def test_anthropic_output_config(fmt: Any, expected: Any) -> None:
    assert flt.anthropic_output_config(fmt) == expected


def test_output_config_round_trip() -> None:
    src = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
           "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}
    req_ = am.decode_request(src)
    assert flt.anthropic_output_config(req_.response_format) == src["output_config"]


def test_filters_registry() -> None:
    assert set(flt.FILTERS) == {
        "anthropic_messages", "anthropic_system", "anthropic_tools", "anthropic_tool_choice",
        "anthropic_thinking", "anthropic_max_tokens", "anthropic_temperature", "anthropic_top_p",
        "anthropic_top_k", "anthropic_output_config"}
    assert all(callable(f) for f in flt.FILTERS.values())
