from __future__ import annotations

from typing import Any

import pytest

from router.canonical import CanonicalRequest
from router.client_codecs.openai_chat import decode_request
from router.filters.openai import (
    FILTERS,
    openai_messages,
    openai_reasoning_effort,
    openai_response_format,
    openai_stream_options,
    openai_stream_usage,
    openai_tool_choice,
    openai_tools,
)


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


MESSAGE_CASES = [
    ("empty", [], None, []),
    ("system_first", [{"role": "user", "content": [text("hi")]}], "Be brief",
     [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "hi"}]),
    ("multi_text_user_keeps_parts", [{"role": "user", "content": [text("a"), text("b")]}], None,
     [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]),
    (
        "images",
        [{"role": "user", "content": [
            text("see"),
            {"type": "image", "url": "https://x/i.png", "media_type": None, "data": None},
            {"type": "image", "url": None, "media_type": "image/jpeg", "data": "QUJD"},
        ]}],
        None,
        [{"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "https://x/i.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        ]}],
    ),
    (
        "assistant_tool_calls_thinking_dropped",
        [{"role": "assistant", "content": [
            {"type": "thinking", "text": "hmm", "signature": "s"},
            {"type": "tool_call", "id": "call_1", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "tool_call", "id": "call_2", "name": "g", "arguments": ""},
        ]}],
        None,
        [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ]}],
    ),
    ("assistant_text_and_call",
     [{"role": "assistant", "content": [text("ok"), {"type": "tool_call", "id": "c", "name": "f", "arguments": "{}"}]}],
     None,
     [{"role": "assistant", "content": "ok",
       "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]),
    ("assistant_only_thinking_dropped", [{"role": "assistant", "content": [{"type": "thinking", "text": "x"}]}],
     None, []),
    (
        "tool_results",
        [{"role": "tool", "content": [
            {"type": "tool_result", "tool_call_id": "c1", "name": "f", "content": "21", "is_error": False},
            {"type": "tool_result", "tool_call_id": "c2", "name": "g", "content": "boom", "is_error": True},
        ]}],
        None,
        [{"role": "tool", "tool_call_id": "c1", "content": "21"},
         {"role": "tool", "tool_call_id": "c2", "content": "boom"}],
    ),
    (
        "tool_result_in_user_turn_goes_first",
        [{"role": "user", "content": [
            text("and now?"),
            {"type": "tool_result", "tool_call_id": "c1", "name": None, "content": "ok", "is_error": False},
        ]}],
        None,
        [{"role": "tool", "tool_call_id": "c1", "content": "ok"}, {"role": "user", "content": "and now?"}],
    ),
]


@pytest.mark.parametrize("messages,system,expected", [c[1:] for c in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES])
def test_openai_messages(messages: list[Any], system: str | None, expected: list[Any]) -> None:
    assert openai_messages(messages, system) == expected


def test_messages_round_trip_through_chat_decoder() -> None:
    """OpenAI messages -> canonical -> OpenAI messages is the identity for the common shapes."""
    original = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    ]
    req = decode_request({"model": "m", "messages": original}, {})
    assert openai_messages(req.messages, req.system) == original


TOOLS_CASES = [
    ("none", None, None),
    ("empty", [], None),
    ("full", [{"name": "f", "description": "d", "parameters": {"type": "object"}}],
     [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]),
    ("minimal", [{"name": "f", "description": None, "parameters": None}],
     [{"type": "function", "function": {"name": "f"}}]),
]


@pytest.mark.parametrize("tools,expected", [c[1:] for c in TOOLS_CASES], ids=[c[0] for c in TOOLS_CASES])
def test_openai_tools(tools: Any, expected: Any) -> None:
    assert openai_tools(tools) == expected


@pytest.mark.parametrize(
    "choice,expected",
    [(None, None), ("auto", "auto"), ("none", "none"), ("required", "required"),
     ({"name": "f"}, {"type": "function", "function": {"name": "f"}})],
    ids=["none_value", "auto", "none", "required", "named"],
)
def test_openai_tool_choice(choice: Any, expected: Any) -> None:
    assert openai_tool_choice(choice) == expected


FORMAT_CASES = [
    ("absent", None, None),
    ("text", {"type": "text", "schema": None, "name": None, "strict": None}, {"type": "text"}),
    ("json_object", {"type": "json_object", "schema": None, "name": None, "strict": None}, {"type": "json_object"}),
    ("json_schema_full", {"type": "json_schema", "schema": {"type": "object"}, "name": "r", "strict": True},
     {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True}}),
    ("json_schema_defaults", {"type": "json_schema", "schema": {"type": "object"}, "name": None, "strict": None},
     {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}}),
]


@pytest.mark.parametrize("fmt,expected", [c[1:] for c in FORMAT_CASES], ids=[c[0] for c in FORMAT_CASES])
def test_openai_response_format(fmt: Any, expected: Any) -> None:
    assert openai_response_format(fmt) == expected


@pytest.mark.parametrize(
    "reasoning,expected",
    [(None, None), ({"effort": "minimal", "budget": None}, "minimal"), ({"effort": None, "budget": 512}, "low"),
     ({"effort": None, "budget": 1024}, "low"), ({"effort": None, "budget": 1025}, "medium"),
     ({"effort": None, "budget": 8192}, "medium"), ({"effort": None, "budget": 8193}, "high"),
     ({"effort": "low", "budget": 99999}, "low"), ({"effort": None, "budget": None}, None)],
    ids=["absent", "effort", "budget_512", "budget_1024", "budget_1025", "budget_8192", "budget_8193",
         "effort_wins", "empty"],
)
def test_openai_reasoning_effort(reasoning: Any, expected: Any) -> None:
    assert openai_reasoning_effort(reasoning) == expected


@pytest.mark.parametrize(
    "request_obj,expected",
    [(CanonicalRequest(model="m", messages=[], stream=True), {"include_usage": True}),
     (CanonicalRequest(model="m", messages=[], stream=False), None),
     ({"stream": True}, {"include_usage": True}),
     ({}, None)],
    ids=["stream", "no_stream", "dict_stream", "dict_empty"],
)
def test_openai_stream_options(request_obj: Any, expected: Any) -> None:
    assert openai_stream_options(request_obj) == expected


def test_openai_stream_usage_asks_a_passthrough_stream_for_its_usage() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"continuous_usage_stats": False}}
    assert openai_stream_usage(body) == {**body, "stream_options": {"continuous_usage_stats": False,
                                                                    "include_usage": True}}
    assert body["stream_options"] == {"continuous_usage_stats": False}  # the client's body is not changed
    asked = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    assert openai_stream_usage(asked) is asked
    assert openai_stream_usage({"model": "m"}) == {"model": "m"}  # not a stream: as it is
    assert openai_stream_usage(None) is None


def test_filters_registry() -> None:
    assert dict(FILTERS) == {
        "openai_messages": openai_messages,
        "openai_tools": openai_tools,
        "openai_tool_choice": openai_tool_choice,
        "openai_response_format": openai_response_format,
        "openai_reasoning_effort": openai_reasoning_effort,
        "openai_stream_options": openai_stream_options,
        "openai_stream_usage": openai_stream_usage,
    }


def test_filters_in_jinja_sandbox() -> None:
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment()
    env.filters.update(FILTERS)
    req = CanonicalRequest(model="m", messages=[{"role": "user", "content": [text("hi")]}], system="S",
                           tool_choice={"name": "f"}, stream=True)
    out = env.compile_expression("request.messages | openai_messages(request.system)")(request=req)
    assert out == [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    assert env.compile_expression("request.tool_choice | openai_tool_choice")(request=req) == {
        "type": "function", "function": {"name": "f"}}
    assert env.compile_expression("request | openai_stream_options")(request=req) == {"include_usage": True}


@pytest.mark.parametrize(("body", "expected"), [
    ({"model": "m", "stream": True}, {"model": "m", "stream": True, "stream_options": {"include_usage": True}}),
    ({"stream": True, "stream_options": {"include_obfuscation": False}},
     {"stream": True, "stream_options": {"include_obfuscation": False, "include_usage": True}}),
    ({"stream": True, "stream_options": {"include_usage": False}},
     {"stream": True, "stream_options": {"include_usage": True}}),
    ({"stream": True, "stream_options": {"include_usage": True}},
     {"stream": True, "stream_options": {"include_usage": True}}),
    ({"model": "m"}, {"model": "m"}),
    ({"stream": False}, {"stream": False}),
    ("not a body", "not a body"),
])
def test_openai_stream_usage_asks_a_stream_for_usage(body: Any, expected: Any) -> None:
    assert openai_stream_usage(body) == expected
