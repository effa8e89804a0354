"""The OpenAI Responses inbound dialect, checked against the installed openai SDK's own types."""

from __future__ import annotations

from typing import Any

try:  # recent SDK releases are built on the httpx2 fork, older ones on httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx  # type: ignore[no-redef]
import openai
import orjson
import pytest
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from router import response_store
from router.canonical import (
    CanonicalRequest,
    Event,
    Finish,
    ReasoningDelta,
    ResponseContext,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from router.client_codecs import openai_responses as d
from router.errors import BadRequest, GatewayError

EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
TOOL = {"type": "function", "name": "get_weather", "description": "d", "parameters": {"type": "object"}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def make_ctx(body: dict[str, Any] | None = None) -> ResponseContext:
    body = {"model": "gpt-4.1", "input": "hi", **(body or {})}
    return ResponseContext(id="resp_abc123", model="gpt-4.1", created=1741476542, request=d.decode_request(body, {}))


# --- decode: valid requests ----------------------------------------------------------------------

DECODE_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("string_input", {"input": "Hello"}, {"messages": [user("Hello")], "system": None}),
    (
        "instructions_then_system_messages",
        {
            "instructions": "Be brief",
            "input": [
                {"role": "system", "content": "S1"},
                {"role": "developer", "content": [{"type": "input_text", "text": "D1"}]},
                {"role": "user", "content": "q"},
            ],
        },
        {"system": "Be brief\n\nS1\n\nD1", "messages": [user("q")]},
    ),
    (
        "user_parts_and_images",
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "a"},
                        {"type": "input_image", "image_url": "https://x/i.png", "detail": "high"},
                        {"type": "input_image", "image_url": "data:image/png;base64,QUJD", "detail": "auto"},
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image", "url": "https://x/i.png", "media_type": None, "data": None},
                        {"type": "image", "url": None, "media_type": "image/png", "data": "QUJD"},
                    ],
                }
            ]
        },
    ),
    (
        "assistant_text_and_calls_merge_and_tool_output_named",
        {
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
                 "encrypted_content": "ENC"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check"}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
                {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "21C"},
                {"type": "function_call_output", "call_id": "c2",
                 "output": [{"type": "input_text", "text": "noon"}]},
                {"type": "function_call_output", "call_id": "zz", "output": "?"},
            ]
        },
        {
            "messages": [
                user("weather?"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "text": "think", "signature": "ENC"},
                        {"type": "text", "text": "Let me check"},
                        {"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
                        {"type": "tool_call", "id": "c2", "name": "get_time", "arguments": "{}"},
                    ],
                },
                {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c1", "name": "get_weather",
                                              "content": "21C", "is_error": False}]},
                {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c2", "name": "get_time",
                                              "content": "noon", "is_error": False}]},
                {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "zz", "name": None,
                                              "content": "?", "is_error": False}]},
            ]
        },
    ),
    (
        "assistant_string_content_and_refusal",
        {
            "input": [
                {"role": "assistant", "content": "plain"},
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            ]
        },
        {
            "messages": [
                {"role": "assistant", "content": [{"type": "text", "text": "plain"}]},
                user("x"),
                {"role": "assistant", "content": [{"type": "text", "text": "no"}]},
            ]
        },
    ),
    (
        "reasoning_without_summary_uses_content",
        {"input": [{"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "raw"}]},
                   {"role": "user", "content": "x"}]},
        {"messages": [{"role": "assistant", "content": [{"type": "thinking", "text": "raw", "signature": None}]},
                      user("x")]},
    ),
    (
        "tools_choice_format_reasoning_scalars",
        {
            "tools": [TOOL, {"type": "function", "name": "g", "strict": True}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
            "reasoning": {"effort": "high", "summary": "auto"},
            "max_output_tokens": 64,
            "temperature": 1,
            "top_p": 0.5,
            "parallel_tool_calls": False,
            "metadata": {"k": "v"},
            "user": "u1",
            "stream": True,
            "store": False,
        },
        {
            "tools": [
                {"name": "get_weather", "description": "d", "parameters": {"type": "object"}},
                {"name": "g", "description": None, "parameters": None},
            ],
            "tool_choice": {"name": "get_weather"},
            "response_format": {"type": "json_schema", "schema": {"type": "object"}, "name": "out", "strict": True},
            "reasoning": {"effort": "high", "budget": None},
            "max_tokens": 64,
            "temperature": 1.0,
            "top_p": 0.5,
            "parallel_tool_calls": False,
            "metadata": {"k": "v"},
            "user": "u1",
            "stream": True,
            "include_usage": True,
        },
    ),
    ("tool_choice_required", {"tool_choice": "required"}, {"tool_choice": "required"}),
    ("json_object_format", {"text": {"format": {"type": "json_object"}}},
     {"response_format": {"type": "json_object", "schema": None, "name": None, "strict": None}}),
    ("text_without_format", {"text": {"verbosity": "low"}}, {"response_format": None}),
    ("reasoning_summary_only", {"reasoning": {"summary": "auto"}}, {"reasoning": None}),
    ("empty_tools_is_none", {"tools": []}, {"tools": None}),
    ("defaults", {}, {"stream": False, "tools": None, "tool_choice": None, "max_tokens": None,
                      "temperature": None, "user": None, "inbound": "openai.responses"}),
    ("previous_response_without_input", {"input": None, "previous_response_id": "resp_1"}, {"messages": []}),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decode(body: dict[str, Any], expected: dict[str, Any]) -> None:
    full = {"model": "gpt-4.1", "input": "hi", **body}
    req = d.decode_request(full, {})
    assert isinstance(req, CanonicalRequest)
    assert req.model == "gpt-4.1"
    assert req.raw is full
    for key, value in expected.items():
        assert getattr(req, key) == value, key


# --- decode: bad requests ------------------------------------------------------------------------

BAD_CASES: list[tuple[str, Any, str | None]] = [
    ("body_list", [], None),
    ("body_string", "x", None),
    ("body_null", None, None),
    ("no_model", {"input": "x"}, "model"),
    ("model_not_string", {"model": 3, "input": "x"}, "model"),
    ("no_input", {"model": "m"}, "input"),
    ("empty_input_list", {"model": "m", "input": []}, "input"),
    ("input_number", {"model": "m", "input": 5}, "input"),
    ("item_not_object", {"model": "m", "input": ["x"]}, "input[0]"),
    ("bad_role", {"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ("content_number", {"model": "m", "input": [{"role": "user", "content": 1}]}, "input[0].content"),
    ("content_null", {"model": "m", "input": [{"role": "user"}]}, "input[0].content"),
    ("part_not_object", {"model": "m", "input": [{"role": "user", "content": [1]}]}, "input[0].content[0]"),
    ("part_text_missing", {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
     "input[0].content[0].text"),
    ("input_file", {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ("image_file_id",
     {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].file_id"),
    ("image_bad_url",
     {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]},
     "input[0].content[0].image_url"),
    ("image_url_not_string",
     {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": {"u": 1}}]}]},
     "input[0].content[0].image_url"),
    ("image_in_system",
     {"model": "m", "input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
     "input[0].content[0].type"),
    ("image_in_assistant",
     {"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
     "input[0].content[0].type"),
    ("unknown_item_type", {"model": "m", "input": [{"type": "web_search_call", "id": "w"}]}, "input[0].type"),
    ("item_type_number", {"model": "m", "input": [{"type": 7}]}, "input[0].type"),
    ("item_reference", {"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ("call_without_call_id", {"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id"),
    ("call_without_name", {"model": "m", "input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]},
     "input[0].name"),
    ("call_arguments_object",
     {"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
     "input[0].arguments"),
    ("output_without_call_id", {"model": "m", "input": [{"type": "function_call_output", "output": "x"}]},
     "input[0].call_id"),
    ("output_number", {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": 3}]},
     "input[0].output"),
    ("output_image",
     {"model": "m", "input": [{"type": "function_call_output", "call_id": "c",
                               "output": [{"type": "input_image", "image_url": "https://x"}]}]},
     "input[0].output[0].type"),
    ("reasoning_summary_string", {"model": "m", "input": [{"type": "reasoning", "summary": "x"}]},
     "input[0].summary"),
    ("reasoning_summary_item_string", {"model": "m", "input": [{"type": "reasoning", "summary": ["x"]}]},
     "input[0].summary[0]"),
    ("reasoning_encrypted_number",
     {"model": "m", "input": [{"type": "reasoning", "summary": [], "encrypted_content": 1}]},
     "input[0].encrypted_content"),
    ("instructions_list", {"model": "m", "input": "x", "instructions": ["a"]}, "instructions"),
    ("tools_object", {"model": "m", "input": "x", "tools": {}}, "tools"),
    ("tool_not_object", {"model": "m", "input": "x", "tools": ["f"]}, "tools[0]"),
    ("tool_web_search", {"model": "m", "input": "x", "tools": [TOOL, {"type": "web_search"}]}, "tools[1].type"),
    ("tool_nested_chat_shape",
     {"model": "m", "input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools[0].name"),
    ("tool_parameters_list",
     {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": []}]},
     "tools[0].parameters"),
    ("tool_strict_string",
     {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "strict": "yes"}]},
     "tools[0].strict"),
    ("tool_choice_bad_string", {"model": "m", "input": "x", "tool_choice": "any"}, "tool_choice"),
    ("tool_choice_number", {"model": "m", "input": "x", "tool_choice": 1}, "tool_choice"),
    ("tool_choice_file_search", {"model": "m", "input": "x", "tool_choice": {"type": "file_search"}},
     "tool_choice.type"),
    ("tool_choice_no_name", {"model": "m", "input": "x", "tool_choice": {"type": "function"}}, "tool_choice.name"),
    ("text_string", {"model": "m", "input": "x", "text": "json"}, "text"),
    ("format_string", {"model": "m", "input": "x", "text": {"format": "json"}}, "text.format"),
    ("format_bad_type", {"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ("schema_missing",
     {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ("schema_name_missing",
     {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
    ("reasoning_list", {"model": "m", "input": "x", "reasoning": []}, "reasoning"),
    ("reasoning_effort_number", {"model": "m", "input": "x", "reasoning": {"effort": 1}}, "reasoning.effort"),
    ("max_output_tokens_string", {"model": "m", "input": "x", "max_output_tokens": "5"}, "max_output_tokens"),
    ("max_output_tokens_bool", {"model": "m", "input": "x", "max_output_tokens": True}, "max_output_tokens"),
    ("max_output_tokens_zero", {"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ("max_output_tokens_float", {"model": "m", "input": "x", "max_output_tokens": 1.5}, "max_output_tokens"),
    ("temperature_string", {"model": "m", "input": "x", "temperature": "1"}, "temperature"),
    ("temperature_bool", {"model": "m", "input": "x", "temperature": False}, "temperature"),
    ("top_p_list", {"model": "m", "input": "x", "top_p": [1]}, "top_p"),
    ("parallel_string", {"model": "m", "input": "x", "parallel_tool_calls": "true"}, "parallel_tool_calls"),
    ("stream_int", {"model": "m", "input": "x", "stream": 1}, "stream"),
    ("store_string", {"model": "m", "input": "x", "store": "no"}, "store"),
    ("metadata_list", {"model": "m", "input": "x", "metadata": []}, "metadata"),
    ("user_number", {"model": "m", "input": "x", "user": 5}, "user"),
    ("previous_number", {"model": "m", "input": "x", "previous_response_id": 5}, "previous_response_id"),
]


@pytest.mark.parametrize(("body", "param"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_decode_rejects(body: Any, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        d.decode_request(body, {})
    assert info.value.param == param
    assert info.value.status == 400
    assert info.value.message


# --- non-stream encoding -------------------------------------------------------------------------

TEXT_EVENTS: list[Event] = [TextDelta("Hel"), TextDelta("lo"), Finish("stop"), Usage(36, 87, 4, 10)]
FULL_EVENTS: list[Event] = [
    ReasoningDelta("Think"),
    ReasoningDelta("ing", signature="SIG"),
    TextDelta("Checking"),
    ToolCallStart(0, "call_1", "get_weather"),
    ToolCallDelta(0, '{"city":'),
    ToolCallDelta(0, '"Paris"}'),
    ToolCallStart(1, "call_2", "get_time"),
    ToolCallDelta(1, "{}"),
    Finish("tool_calls"),
    Usage(10, 20, 0, 5),
]


def test_encode_text_response_matches_protocol() -> None:
    obj = d.encode_response(TEXT_EVENTS, make_ctx())
    assert obj == {
        "id": "resp_abc123",
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "gpt-4.1",
        "output": [
            {"type": "message", "id": "msg_abc123", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                  "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 123},
        "user": None,
        "metadata": {},
    }
    parsed = Response.model_validate(obj)
    assert parsed.output_text == "Hello"
    assert parsed.usage is not None and parsed.usage.total_tokens == 123


def test_encode_full_response_items_and_echo() -> None:
    body = {
        "instructions": "Be brief", "tools": [TOOL], "tool_choice": "required", "max_output_tokens": 50,
        "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": False, "previous_response_id": "resp_prev",
        "reasoning": {"effort": "low", "summary": "auto"}, "store": False, "user": "u",
        "metadata": {"a": "b"}, "text": {"format": {"type": "json_object"}},
    }
    obj = d.encode_response(FULL_EVENTS, make_ctx(body))
    parsed = Response.model_validate(obj)
    assert [item["type"] for item in obj["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert obj["output"][0] == {"type": "reasoning", "id": "rs_abc123",
                                "summary": [{"type": "summary_text", "text": "Thinking"}], "encrypted_content": "SIG"}
    assert obj["output"][2] == {"type": "function_call", "id": "fc_abc123_0", "call_id": "call_1",
                                "name": "get_weather", "arguments": '{"city":"Paris"}', "status": "completed"}
    assert obj["output"][3]["id"] == "fc_abc123_1"
    assert parsed.output_text == "Checking"
    echoed = {k: obj[k] for k in body if k != "tools"}
    assert echoed == {k: v for k, v in body.items() if k != "tools"}
    assert obj["tools"] == [{**TOOL, "strict": True}]


INCOMPLETE_CASES = [
    ("length", "max_output_tokens"),
    ("content_filter", "content_filter"),
]


@pytest.mark.parametrize(("finish", "reason"), INCOMPLETE_CASES, ids=[c[0] for c in INCOMPLETE_CASES])
def test_encode_incomplete(finish: str, reason: str) -> None:
    obj = d.encode_response([TextDelta("cut"), Finish(finish)], make_ctx())
    assert obj["status"] == "incomplete"
    assert obj["incomplete_details"] == {"reason": reason}
    assert obj["output"][0]["status"] == "incomplete"
    assert Response.model_validate(obj).incomplete_details.reason == reason  # type: ignore[union-attr]


def test_encode_empty_and_failed() -> None:
    empty = d.encode_response([], make_ctx())
    assert empty["output"] == [] and empty["status"] == "completed"
    assert empty["usage"]["total_tokens"] == 0
    failed = d.encode_response([TextDelta("x"), StreamError(502, "bad_gateway", "reset")], make_ctx())
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "reset"}
    assert Response.model_validate(failed).error.code == "server_error"  # type: ignore[union-attr]


# --- streaming -----------------------------------------------------------------------------------


def run_stream(events: list[Event], ctx: ResponseContext | None = None, *, fail: StreamError | None = None) -> bytes:
    enc = d.StreamEncoder(ctx or make_ctx())
    out = enc.start() + b"".join(enc.feed(ev) for ev in events)
    return out + (enc.error(fail) if fail else enc.finish())


def parse_frames(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\n\n")
    frames = []
    for block in raw.decode().split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = orjson.loads(data_line[len("data: "):])
        assert data["type"] == event_line[len("event: "):]
        frames.append(data)
    return frames


def replay(frames: list[dict[str, Any]]) -> ResponseStreamState[Any]:
    """Validate each frame with the SDK's event union and feed the SDK's stream accumulator."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for frame in frames:
        state.handle_event(EVENT_ADAPTER.validate_python(frame))
    return state


STREAM_CASES: list[tuple[str, list[Event], list[str]]] = [
    ("text", TEXT_EVENTS, [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]),
    ("reasoning_text_calls", FULL_EVENTS, [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]),
    ("empty_deltas_skipped", [TextDelta(""), ReasoningDelta(""), ToolCallDelta(5, "x"), Finish("stop")],
     ["response.created", "response.in_progress", "response.completed"]),
    ("other_choices_ignored", [TextDelta("a", choice=1), Finish("stop", choice=1)],
     ["response.created", "response.in_progress", "response.completed"]),
]


@pytest.mark.parametrize(("events", "types"), [c[1:] for c in STREAM_CASES], ids=[c[0] for c in STREAM_CASES])
def test_stream_event_order_and_sdk_replay(events: list[Event], types: list[str]) -> None:
    ctx = make_ctx({"tools": [TOOL]})
    frames = parse_frames(run_stream(events, ctx))
    assert [f["type"] for f in frames] == types
    assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
    state = replay(frames)
    final = state._completed_response
    assert final is not None
    assert frames[-1]["response"] == d.encode_response(events, ctx)  # stream and JSON agree


def test_stream_created_is_in_progress_and_indexes_are_sequential() -> None:
    frames = parse_frames(run_stream(FULL_EVENTS))
    created = frames[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    added = [f for f in frames if f["type"] == "response.output_item.added"]
    assert [f["output_index"] for f in added] == [0, 1, 2, 3]
    assert [f["item"]["id"] for f in added] == ["rs_abc123", "msg_abc123", "fc_abc123_0", "fc_abc123_1"]
    call = added[2]["item"]
    assert call == {"type": "function_call", "id": "fc_abc123_0", "call_id": "call_1", "name": "get_weather",
                    "arguments": "", "status": "in_progress"}
    args_done = [f for f in frames if f["type"] == "response.function_call_arguments.done"]
    assert [f["arguments"] for f in args_done] == ['{"city":"Paris"}', "{}"]
    reasoning_done = frames[8]
    assert reasoning_done["item"]["encrypted_content"] == "SIG"
    text_done = next(f for f in frames if f["type"] == "response.output_text.done")
    assert text_done["text"] == "Checking" and text_done["content_index"] == 0


@pytest.mark.parametrize(("finish", "reason"), INCOMPLETE_CASES, ids=[c[0] for c in INCOMPLETE_CASES])
def test_stream_incomplete(finish: str, reason: str) -> None:
    frames = parse_frames(run_stream([TextDelta("cut"), Finish(finish)]))
    last = frames[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": reason}
    state = replay(frames)
    assert state._completed_response is None  # the SDK only finalizes on response.completed


ERROR_CASES = [
    ("rate_limit", StreamError(429, "rate_limit", "slow down"), "rate_limit_exceeded"),
    ("reset", StreamError(502, "bad_gateway", "upstream reset"), "server_error"),
]


@pytest.mark.parametrize(("err", "code"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_stream_failed(err: StreamError, code: str) -> None:
    enc = d.StreamEncoder(make_ctx())
    raw = enc.start() + enc.feed(TextDelta("part")) + enc.feed(err)
    assert enc.finish() == b"" and enc.feed(TextDelta("late")) == b""  # terminal
    frames = parse_frames(raw)
    last = frames[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": code, "message": err.message}
    assert last["response"]["output"][0]["status"] == "incomplete"
    assert last["response"]["output"][0]["content"][0]["text"] == "part"
    replay(frames)


def test_stream_late_delta_for_closed_call_reaches_final_response() -> None:
    events: list[Event] = [
        ToolCallStart(0, "c0", "f"), ToolCallStart(1, "c1", "g"), ToolCallDelta(0, "{}"), ToolCallDelta(1, "[]"),
        ToolCallStart(1, "dup", "dup"),
    ]
    frames = parse_frames(run_stream(events))
    final = frames[-1]["response"]["output"]
    assert [(i["call_id"], i["arguments"]) for i in final] == [("c0", "{}"), ("c1", "[]")]
    assert replay(frames)._completed_response is not None


def test_stream_signature_only_reasoning() -> None:
    frames = parse_frames(run_stream([ReasoningDelta("", signature="S"), TextDelta("x")]))
    assert "response.reasoning_summary_part.added" not in [f["type"] for f in frames]
    assert frames[-1]["response"]["output"][0] == {"type": "reasoning", "id": "rs_abc123", "summary": [],
                                                   "encrypted_content": "S"}
    replay(frames)


# --- the real SDK over HTTP ----------------------------------------------------------------------


def sdk_client(payload: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=payload, headers={"content-type": content_type})

    http_client = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(api_key="k", base_url="http://gw/v1", http_client=http_client)


def test_sdk_stream_get_final_response_with_function_calls() -> None:
    client = sdk_client(run_stream(FULL_EVENTS, make_ctx({"tools": [TOOL]})), "text/event-stream")
    with client.responses.stream(model="gpt-4.1", input="hi", tools=[TOOL]) as stream:  # type: ignore[list-item]
        deltas = [ev.delta for ev in stream if ev.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Checking"]
    assert final.output_text == "Checking"
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}'), ("call_2", "get_time", "{}")]
    assert final.usage is not None and final.usage.output_tokens == 20


def test_sdk_stream_failed_is_surfaced() -> None:
    raw = run_stream([TextDelta("x")], fail=StreamError(503, "unavailable", "down"))
    client = sdk_client(raw, "text/event-stream")
    with client.responses.stream(model="gpt-4.1", input="hi") as stream:
        events = list(stream)
        assert events[-1].type == "response.failed"
        assert events[-1].response.error is not None and events[-1].response.error.message == "down"
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()


def test_sdk_create_non_stream() -> None:
    body = orjson.dumps(d.encode_response(FULL_EVENTS, make_ctx()))
    resp = sdk_client(body, "application/json").responses.create(model="gpt-4.1", input="hi")
    assert resp.id == "resp_abc123" and resp.output_text == "Checking" and resp.status == "completed"


# --- errors and re-exports -----------------------------------------------------------------------

ERROR_BODY_CASES = [
    ("bad_request", BadRequest("bad field", param="input[0].role"),
     {"message": "bad field", "type": "invalid_request_error", "param": "input[0].role", "code": None}),
    ("auth", GatewayError("authentication", "no key", code="invalid_api_key"),
     {"message": "no key", "type": "authentication_error", "param": None, "code": "invalid_api_key"}),
    ("not_found", GatewayError("not_found", "no model", code="model_not_found"),
     {"message": "no model", "type": "invalid_request_error", "param": None, "code": "model_not_found"}),
    ("rate_limit", GatewayError("rate_limit", "slow"),
     {"message": "slow", "type": "rate_limit_error", "param": None, "code": None}),
    ("overloaded", GatewayError("overloaded", "busy"),
     {"message": "busy", "type": "server_error", "param": None, "code": None}),
]


@pytest.mark.parametrize(("err", "expected"), [c[1:] for c in ERROR_BODY_CASES], ids=[c[0] for c in ERROR_BODY_CASES])
def test_error_body(err: GatewayError, expected: dict[str, Any]) -> None:
    assert d.error_body(err) == {"error": expected}


def test_conversation_helpers_are_exported() -> None:
    assert d.NAME == "openai.responses"
    assert d.conversation_after is response_store.conversation_after
    assert d.apply_previous is response_store.apply_previous
