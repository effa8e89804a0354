"""Upstream OpenAI Chat Completions responses (JSON or SSE chunks) -> canonical events.

Raises ``ValueError`` on malformed upstream data. Tolerates what OpenAI-compatible servers vary in:
``reasoning`` as an alias of ``reasoning_content``, missing tool-call ``index`` (continue the last
call unless a new ``id`` appears), missing tool-call ids (synthesized), usage sent in every chunk
(the last one wins) or in a final chunk with ``choices: []``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from router.canonical import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    new_call_id,
)
from router.codecs import UpstreamCodec
from router.errors import kind_for_status
from router.failures import CONTEXT_LENGTH, ErrorDetails, error_message
from router.filters.openai import FILTERS
from router.upstream_codecs import gemini

_FINISH: Mapping[str, str] = MappingProxyType(
    {
        "stop": "stop",
        "length": "length",
        "tool_calls": "tool_calls",
        "function_call": "tool_calls",
        "content_filter": "content_filter",
    }
)
# upstream error type/code -> (kind, status)
_ERROR_KINDS: Mapping[str, tuple[str, int]] = MappingProxyType(
    {
        "invalid_request_error": ("invalid_request", 400),
        "authentication_error": ("authentication", 401),
        "permission_error": ("permission", 403),
        "not_found_error": ("not_found", 404),
        "rate_limit_error": ("rate_limit", 429),
        "rate_limit_exceeded": ("rate_limit", 429),
        "insufficient_quota": ("rate_limit", 429),
        "timeout_error": ("timeout", 504),
        "overloaded_error": ("overloaded", 529),
    }
)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"malformed OpenAI response: {what} is not an object")
    return value


def _load(body: bytes | str | dict[str, Any]) -> dict[str, Any]:
    data = body if isinstance(body, dict) else orjson.loads(body)
    return _obj(data, "the body")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def decode_usage(usage: Any) -> Usage | None:
    """OpenAI usage object -> canonical Usage (None when absent)."""
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=_int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        reasoning_tokens=(
            _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        ),
    )


def error_event(error: Any) -> StreamError:
    """An upstream ``{"error": ...}`` object -> StreamError."""
    keys: tuple[Any, ...]  # the fields naming the error's kind, most specific first
    if isinstance(error, dict):
        message = error.get("message")
        keys = (error.get("code"), error.get("type"))
    else:
        message, keys = error, ()
    kind, status = "server", 500
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        kind, status = kind_for_status(code), code
    for key in keys:
        if isinstance(key, str) and key in _ERROR_KINDS:
            kind, status = _ERROR_KINDS[key]
            break
    return StreamError(status=status, kind=kind, message=message if isinstance(message, str) else "upstream error")


def _finish(reason: Any) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise ValueError("malformed OpenAI response: finish_reason is not a string")
    return _FINISH.get(reason, "stop")


def _str_field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"malformed OpenAI response: {key} is not a string")
    return value


def _content(obj: dict[str, Any]) -> str:
    """``content`` as text; some compatible servers send a list of parts (text parts are kept)."""
    value = obj.get("content")
    if value.__class__ is list:
        return "".join(p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str)
                       and p.get("type", "text") == "text")
    return _str_field(obj, "content") or _str_field(obj, "refusal")


def _reasoning(obj: dict[str, Any]) -> str:
    text = _str_field(obj, "reasoning_content")
    if text:
        return text
    reasoning = obj.get("reasoning")
    return reasoning if isinstance(reasoning, str) else ""


def _choice_index(choice: dict[str, Any]) -> int:
    index = choice.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError("malformed OpenAI response: choice index is not an integer")
    return index


def _message_events(message: dict[str, Any], c: int, out: list[Event]) -> None:
    reasoning = _reasoning(message)
    if reasoning:
        out.append(ReasoningDelta(reasoning, choice=c))
    text = _content(message)
    if text:
        out.append(TextDelta(text, choice=c))
    calls = message.get("tool_calls")
    if calls is None:
        calls = []
    elif not isinstance(calls, list):
        raise ValueError("malformed OpenAI response: tool_calls is not an array")
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls = [*calls, {"function": legacy}]
    for k, call in enumerate(calls):
        fn = _obj(_obj(call, "a tool call").get("function"), "a tool call function")
        call_id = call.get("id")
        out.append(ToolCallStart(k, call_id if isinstance(call_id, str) and call_id else new_call_id(),
                                 _str_field(fn, "name"), choice=c))
        args = _str_field(fn, "arguments")
        if args:
            out.append(ToolCallDelta(k, args, choice=c))


def decode_response(body: bytes | str | dict[str, Any]) -> list[Event]:
    """A complete chat.completion object -> events (usage, when present, last)."""
    data = _load(body)
    if data.get("error") is not None:
        return [error_event(data["error"])]
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise ValueError("malformed OpenAI response: choices is not an array")
    out: list[Event] = []
    for choice in choices:
        choice = _obj(choice, "a choice")
        c = _choice_index(choice)
        _message_events(_obj(choice.get("message") or {}, "a message"), c, out)
        reason = _finish(choice.get("finish_reason"))
        if reason is not None:
            out.append(Finish(reason, choice=c))
    usage = decode_usage(data.get("usage"))
    if usage is not None:
        usage.model = _model(data)
        out.append(usage)
    return out


def _model(doc: dict[str, Any]) -> str:
    """The model an answer (or a chunk) names; "" when it names none."""
    model = doc.get("model")
    return model if isinstance(model, str) else ""


class _Calls:
    """Tool-call numbering of one choice: upstream index -> canonical sequential index."""

    __slots__ = ("by_index", "last", "last_id", "count")

    def __init__(self) -> None:
        self.by_index: dict[int, int] = {}
        self.last = -1
        self.last_id: str | None = None
        self.count = 0


class StreamDecoder:
    """Decodes one upstream chat.completion.chunk SSE stream, one data payload at a time."""

    __slots__ = ("_usage", "_calls", "_finished")

    def __init__(self) -> None:
        self._usage: Usage | None = None
        self._calls: dict[int, _Calls] = {}
        self._finished: set[int] = set()

    def feed(self, event: str | None, data: bytes) -> list[Event]:
        if not data or data.startswith(b"[DONE]") or data.isspace():
            return []
        chunk = orjson.loads(data)
        # Fast path for the overwhelmingly common chunk: one choice, a {"content": str} delta.
        if chunk.__class__ is dict and "error" not in chunk and chunk.get("usage") is None:
            choices = chunk.get("choices")
            if choices.__class__ is list and len(choices) == 1:
                choice = choices[0]
                if choice.__class__ is dict and choice.get("finish_reason") is None:
                    delta = choice.get("delta")
                    index = choice.get("index", 0)
                    if delta.__class__ is dict and len(delta) == 1 and index.__class__ is int:
                        content = delta.get("content")
                        if content.__class__ is str:
                            return [TextDelta(content, index)] if content else []
        return self._chunk(_obj(chunk, "a chunk"))

    def _chunk(self, chunk: dict[str, Any]) -> list[Event]:
        if chunk.get("error") is not None:
            return [error_event(chunk["error"])]
        usage = chunk.get("usage")
        if usage is not None:
            self._usage = decode_usage(usage)
            if self._usage is not None:  # the usage chunk names the model, as every chunk does
                self._usage.model = _model(chunk)
        choices = chunk.get("choices")
        if not choices:
            if choices is None or choices == []:
                return []
            raise ValueError("malformed OpenAI chunk: choices is not an array")
        if not isinstance(choices, list):
            raise ValueError("malformed OpenAI chunk: choices is not an array")
        out: list[Event] = []
        for choice in choices:
            self._choice(_obj(choice, "a choice"), out)
        return out

    def _choice(self, choice: dict[str, Any], out: list[Event]) -> None:
        c = _choice_index(choice)
        delta = choice.get("delta")
        if delta:
            delta = _obj(delta, "a delta")
            content = delta.get("content")
            if content.__class__ is str and (len(delta) == 1 or (len(delta) == 2 and "role" in delta)):
                if content:  # fast path: the common {"content": ...} delta
                    out.append(TextDelta(content, choice=c))
            else:
                self._delta(delta, c, out)
        reason = choice.get("finish_reason")
        if reason is not None and c not in self._finished:
            self._finished.add(c)
            out.append(Finish(_finish(reason) or "stop", choice=c))

    def _delta(self, delta: dict[str, Any], c: int, out: list[Event]) -> None:
        reasoning = _reasoning(delta)
        if reasoning:
            out.append(ReasoningDelta(reasoning, choice=c))
        text = _content(delta)
        if text:
            out.append(TextDelta(text, choice=c))
        calls = delta.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise ValueError("malformed OpenAI chunk: tool_calls is not an array")
            for call in calls:
                self._call(_obj(call, "a tool call"), c, out)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            self._call({"index": 0, "function": legacy}, c, out)

    def _call(self, call: dict[str, Any], c: int, out: list[Event]) -> None:
        state = self._calls.get(c)
        if state is None:
            state = self._calls[c] = _Calls()
        fn = call.get("function")
        fn = _obj(fn, "a tool call function") if fn is not None else {}
        call_id = call.get("id")
        call_id = call_id if isinstance(call_id, str) and call_id else None
        up = call.get("index")
        if isinstance(up, int) and not isinstance(up, bool):
            index = state.by_index.get(up)
        else:  # no index: a new id starts a new call, anything else continues the last one
            is_new = state.last < 0 or (call_id is not None and call_id != state.last_id)
            index = None if is_new else state.last
            up = None
        if index is None:  # a new call
            index = state.count
            state.count += 1
            if up is not None:
                state.by_index[up] = index
            state.last_id = call_id
            out.append(ToolCallStart(index, call_id or new_call_id(), _str_field(fn, "name"), choice=c))
        state.last = index
        args = _str_field(fn, "arguments")
        if args:
            out.append(ToolCallDelta(index, args, choice=c))

    def finish(self) -> list[Event]:
        """The usage seen in the stream, once, after every other event."""
        usage, self._usage = self._usage, None
        return [usage] if usage is not None else []


# --- error bodies ------------------------------------------------------------------------------------
def error_details(doc: Any) -> ErrorDetails:
    """The message of ``{"error": {"message", "type", "code"}}``, or of what OpenAI-compatible servers
    send instead (``{"error": "..."}``, ``{"message": "..."}``). Google's OpenAI-compatible endpoint
    sends Gemini's error bodies (in an array, with ``google.rpc`` details): those read as Gemini's.
    ``code: context_length_exceeded`` is a context-length failure (a fallback trigger)."""
    if isinstance(doc, list) or _has_details(doc):
        return gemini.error_details(doc)
    err = doc.get("error") if isinstance(doc, dict) else None
    too_long = isinstance(err, dict) and err.get("code") == "context_length_exceeded"
    return ErrorDetails(error_message(doc), reason=CONTEXT_LENGTH if too_long else None)


def _has_details(doc: Any) -> bool:
    err = doc.get("error") if isinstance(doc, dict) else None
    return isinstance(err, dict) and "details" in err


# --- the upstream codec (router.registry lists it) -------------------------------------------------
CODEC = UpstreamCodec("openai", decode_response, StreamDecoder, FILTERS, error_details=error_details)
