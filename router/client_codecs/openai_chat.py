"""OpenAI Chat Completions (``POST /v1/chat/completions``): request decoder, response encoders.

The request side validates every field it reads and raises only :class:`BadRequest` naming the
offending field. The stream encoder is on the hot path: the constant head of every chunk
(``id``/``object``/``created``/``model``) is serialised once per stream, and text deltas, the most
frequent event, are framed by concatenating precomputed bytes around ``orjson.dumps(text)``.

Tool calls carry the signature of the reasoning that produced them (Gemini's ``thoughtSignature``)
in ``extra_content.google.thought_signature`` (see ``_openai_signatures``, which also holds this
codec's ``prepare``/``remember_signatures`` capabilities); in a stream it rides on the call's first chunk
only, as the SDK's accumulator concatenates a string sent twice.

The legacy completions codec reuses ``usage_dict``, ``error_body``, ``error_frame`` and ``DONE``
from here; fields are read with ``_fields.OPENAI_CHAT``, the fields shared with legacy completions are
``_openai_common``, message decoding is ``_openai_messages``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import orjson

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
    aggregate,
)
from router.canonical import Choice as AggChoice
from router.canonical import ToolCall as AggToolCall
from router.client_codecs._fields import OPENAI_CHAT as fields
from router.client_codecs._openai_common import common_params, require_model, require_object
from router.client_codecs._openai_messages import decode_messages
from router.client_codecs._openai_signatures import (
    fetch,
    handed_out,
    prepare,
    remember_signatures,
    signature_field,
)
from router.codecs import ClientCodec, Family, ModelEntry
from router.errors import BadRequest, GatewayError

NAME = "openai.chat"

DONE = b"data: [DONE]\n\n"

# kind -> (OpenAI error type, default code)
_ERROR_TYPES: Mapping[str, tuple[str, str | None]] = MappingProxyType(
    {
        "invalid_request": ("invalid_request_error", None),
        "authentication": ("authentication_error", "invalid_api_key"),
        "permission": ("permission_error", None),
        "not_found": ("not_found_error", None),
        "method_not_allowed": ("invalid_request_error", None),
        "request_timeout": ("invalid_request_error", "request_timeout"),
        "request_too_large": ("invalid_request_error", None),
        "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
        "quota": ("insufficient_quota", "insufficient_quota"),  # as OpenAI sends it: type and code alike
        "server": ("server_error", None),
        "bad_gateway": ("server_error", None),
        "unavailable": ("server_error", None),
        "overloaded": ("server_error", None),
        "timeout": ("timeout_error", None),
    }
)
_TOOL_CHOICE_MODES = frozenset(("none", "auto", "required"))
_RESPONSE_FORMAT_TYPES = frozenset(("text", "json_object", "json_schema"))


# --- request decoding ---------------------------------------------------------------------------


def decode_request(body: Any, params: Mapping[str, Any] | None = None) -> CanonicalRequest:
    """Decode a chat.completions request body into the canonical request."""
    body = require_object(body)
    model = require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    system, canonical_messages = decode_messages(messages)
    # each reader runs only when its field is present
    effort = fields.opt_str(body, "reasoning_effort") if "reasoning_effort" in body else None
    return CanonicalRequest(
        model=model,
        messages=canonical_messages,
        system=system,
        tools=_tools(body) if "tools" in body or "functions" in body else None,
        tool_choice=_tool_choice(body) if "tool_choice" in body or "function_call" in body else None,
        max_tokens=_max_tokens(body) if "max_tokens" in body or "max_completion_tokens" in body else None,
        response_format=_response_format(body) if "response_format" in body else None,
        reasoning={"effort": effort, "budget": None} if effort else None,
        parallel_tool_calls=fields.opt_bool(body, "parallel_tool_calls") if "parallel_tool_calls" in body else None,
        raw=body,
        inbound=NAME,
        **common_params(body),
    )


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    value = fields.opt_int(body, "max_completion_tokens", minimum=1)
    return value if value is not None else fields.opt_int(body, "max_tokens", minimum=1)


def _function_def(fn: Any, param: str) -> dict[str, Any]:
    if not isinstance(fn, dict):
        raise BadRequest("a function definition must be an object", param=param)
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("a function needs a non-empty 'name'", param=f"{param}.name")
    return {
        "name": name,
        "description": fields.opt_str(fn, "description", param),
        "parameters": fields.opt_obj(fn, "parameters", param),
    }


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return _legacy_functions(body.get("functions"))
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise BadRequest("only tools of type 'function' are supported", param=f"tools[{i}].type")
        out.append(_function_def(tool.get("function"), f"tools[{i}].function"))
    return out or None


def _legacy_functions(functions: Any) -> list[dict[str, Any]] | None:
    if functions is None:
        return None
    if not isinstance(functions, list):
        raise BadRequest("'functions' must be an array", param="functions")
    return [_function_def(fn, f"functions[{i}]") for i, fn in enumerate(functions)] or None


def _named_choice(value: Any, param: str) -> str | dict[str, Any]:
    if isinstance(value, str):
        if value not in _TOOL_CHOICE_MODES:
            raise BadRequest("tool choice must be 'none', 'auto' or 'required'", param=param)
        return value
    name = value.get("name") if isinstance(value, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("a named tool choice needs a function name", param=param)
    return {"name": name}


def _tool_choice(body: Mapping[str, Any]) -> str | dict[str, Any] | None:
    choice = body.get("tool_choice")
    if choice is None:
        legacy = body.get("function_call")
        return None if legacy is None else _named_choice(legacy, "function_call")
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise BadRequest("only tool_choice of type 'function' is supported", param="tool_choice.type")
        return _named_choice(choice.get("function"), "tool_choice.function")
    return _named_choice(choice, "tool_choice")


def _response_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    fmt = fields.opt_obj(body, "response_format")
    if fmt is None:
        return None
    kind = fmt.get("type")
    if not isinstance(kind, str) or kind not in _RESPONSE_FORMAT_TYPES:
        raise BadRequest("response_format.type must be 'text', 'json_object' or 'json_schema'",
                         param="response_format.type")
    if kind != "json_schema":
        return {"type": kind, "schema": None, "name": None, "strict": None}
    spec = fields.opt_obj(fmt, "json_schema", "response_format")
    if spec is None:
        raise BadRequest("'json_schema' is required", param="response_format.json_schema")
    p = "response_format.json_schema"
    return {
        "type": "json_schema",
        "schema": fields.opt_obj(spec, "schema", p),
        "name": fields.opt_str(spec, "name", p),
        "strict": fields.opt_bool(spec, "strict", p),
    }


# --- non-stream response ------------------------------------------------------------------------


def usage_dict(usage: Usage | None) -> dict[str, Any]:
    """OpenAI usage object (zeros when the upstream reported none)."""
    u = usage or Usage()
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def _tool_call(t: AggToolCall, ctx: ResponseContext) -> dict[str, Any]:
    call: dict[str, Any] = {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
    if t.signature:
        call["extra_content"] = signature_field(t.signature)
        handed_out(ctx, t.id, t.signature)
    return call


def _message(c: AggChoice, ctx: ResponseContext) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": c.text if c.text or not c.tool_calls else None,
                           "refusal": None}
    if c.tool_calls:
        msg["tool_calls"] = [_tool_call(t, ctx) for t in c.tool_calls]
    if c.reasoning:
        msg["reasoning_content"] = c.reasoning
    return msg


def encode_response(events: list[Event], ctx: ResponseContext) -> dict[str, Any]:
    """The chat.completion object for a complete event sequence."""
    agg = aggregate(events)
    return {
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [
            {"index": c.index, "message": _message(c, ctx), "logprobs": None, "finish_reason": c.finish_reason}
            for c in agg.choices
        ],
        "usage": usage_dict(agg.usage),
    }


# --- errors ---------------------------------------------------------------------------------------


def error_type(kind: str) -> tuple[str, str | None]:
    """(OpenAI error type, default code) for an error kind."""
    return _ERROR_TYPES.get(kind, ("server_error", None))


def error_body(err: GatewayError) -> dict[str, Any]:
    """The OpenAI error JSON for a gateway error."""
    etype, default_code = error_type(err.kind)
    code = err.code if err.code is not None else default_code
    return {"error": {"message": err.message, "type": etype, "param": err.param, "code": code}}


def error_frame(err: StreamError) -> bytes:
    """The terminal mid-stream error frames (the SDK raises APIError on a top-level "error")."""
    body = {"error": {"message": err.message, "type": error_type(err.kind)[0], "code": None, "param": None}}
    return b"data: " + orjson.dumps(body) + b"\n\n" + DONE


# --- streaming ------------------------------------------------------------------------------------

_TEXT_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'
_ARGS_MID = b',"function":{"arguments":'
_ARGS_TAIL = b"}}]" + _TEXT_TAIL


class StreamEncoder:
    """Encodes canonical events as chat.completion.chunk SSE frames for one response."""

    __slots__ = ("_ctx", "_head", "_text0", "_args0", "_include_usage", "_usage", "_started", "_finished",
                 "_tools", "_unclaimed")

    def __init__(self, ctx: ResponseContext):
        self._ctx = ctx
        self._head = (
            b'data: {"id":'
            + orjson.dumps(ctx.id)
            + b',"object":"chat.completion.chunk","created":'
            + orjson.dumps(ctx.created)
            + b',"model":'
            + orjson.dumps(ctx.model)
            + b',"choices":'
        )
        self._text0 = self._head + b'[{"index":0,"delta":{"content":'
        self._args0 = self._head + b'[{"index":0,"delta":{"tool_calls":[{"index":'
        self._include_usage = ctx.request.include_usage
        self._usage: Usage | None = None
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._tools: dict[int, bool] = {}
        self._unclaimed: dict[int, str] = {}  # choice -> reasoning signature waiting for its tool call

    def start(self) -> bytes:
        return b""

    def _chunk(self, choice: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        entry = {"index": choice, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._head + orjson.dumps([entry]) + b"}\n\n"

    def _open(self, choice: int) -> bytes:
        if choice in self._started:
            return b""
        self._started.add(choice)
        return self._chunk(choice, {"role": "assistant", "content": ""})

    def feed(self, ev: Event) -> bytes:
        if type(ev) is TextDelta:
            if not ev.text:
                return b""
            c = ev.choice
            opened = self._open(c)
            if c == 0:
                return opened + self._text0 + orjson.dumps(ev.text) + _TEXT_TAIL
            return opened + self._chunk(c, {"content": ev.text})
        if type(ev) is ToolCallDelta:
            if not ev.arguments:
                return b""
            c = ev.choice
            opened = self._open(c)
            if c == 0:
                return b"".join((opened, self._args0, str(ev.index).encode(), _ARGS_MID,
                                 orjson.dumps(ev.arguments), _ARGS_TAIL))
            delta = {"index": ev.index, "function": {"arguments": ev.arguments}}
            return opened + self._chunk(c, {"tool_calls": [delta]})
        if type(ev) is ReasoningDelta:
            if ev.signature:  # the next tool call of the choice carries it (see the module docstring)
                self._unclaimed[ev.choice] = self._unclaimed.get(ev.choice, "") + ev.signature
            if not ev.text:
                return b""
            return self._open(ev.choice) + self._chunk(ev.choice, {"reasoning_content": ev.text})
        if type(ev) is ToolCallStart:
            self._tools[ev.choice] = True
            call: dict[str, Any] = {
                "index": ev.index,
                "id": ev.id,
                "type": "function",
                "function": {"name": ev.name, "arguments": ""},
            }
            signature = self._unclaimed.pop(ev.choice, None) if self._unclaimed else None
            if signature:
                call["extra_content"] = signature_field(signature)
                handed_out(self._ctx, ev.id, signature)
            return self._open(ev.choice) + self._chunk(ev.choice, {"tool_calls": [call]})
        if type(ev) is Finish:
            return self._finish_choice(ev.choice, ev.reason)
        if type(ev) is Usage:
            self._usage = ev
            return b""
        if type(ev) is StreamError:
            return self.error(ev)
        return b""

    def _finish_choice(self, choice: int, reason: str) -> bytes:
        if choice in self._finished:
            return b""
        self._finished.add(choice)
        return self._open(choice) + self._chunk(choice, {}, reason)

    def finish(self) -> bytes:
        """Close unfinished choices, then the usage chunk (when asked for) and ``[DONE]``."""
        parts = []
        if not self._started:
            parts.append(self._finish_choice(0, "stop"))
        parts.extend(self._finish_choice(choice, "tool_calls" if self._tools.get(choice) else "stop")
                     for choice in sorted(self._started - self._finished))
        if self._include_usage:
            parts.append(self._head + b'[],"usage":' + orjson.dumps(usage_dict(self._usage)) + b"}\n\n")
        parts.append(DONE)
        return b"".join(parts)

    def error(self, err: StreamError) -> bytes:
        return error_frame(err)


# --- the family and the codec (router.registry lists them) ----------------------------------------


def _model_object(m: ModelEntry) -> dict[str, Any]:
    return {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owner}


def _models_list(models: Sequence[ModelEntry]) -> dict[str, Any]:
    return {"object": "list", "data": [_model_object(m) for m in models]}


FAMILY = Family("openai", error_body, _models_list, _model_object)
CODEC = ClientCodec(NAME, FAMILY, decode_request, encode_response, StreamEncoder, id_prefix="chatcmpl-",
                    prepare=prepare, fetch=fetch, remember_signatures=remember_signatures)
