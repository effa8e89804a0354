"""OpenAI Responses API output: the Response object, its output items and the SSE stream encoder.

The non-stream encoder (``openai_responses.encode_response``) and :class:`StreamEncoder` build the
same Response object from here, so a streamed ``response.completed`` equals the JSON answer. Item
ids derive from the response id (``resp_<hex>`` -> ``msg_<hex>``, ``rs_<hex>``, ``fc_<hex>_<i>``),
so they agree between the two forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from router.canonical import (
    Choice,
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

# finish reason -> incomplete_details.reason; any other reason completes the response
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def id_suffix(response_id: str) -> str:
    """The part of ``resp_<hex>`` that item ids reuse."""
    return response_id.removeprefix("resp_")


def item_id(prefix: str, response_id: str, n: int = 0) -> str:
    """Deterministic id of the ``n``-th item of one kind: ``msg_<hex>``, then ``msg_<hex>_1``..."""
    base = f"{prefix}_{id_suffix(response_id)}"
    return base if n == 0 else f"{base}_{n}"


def call_item_id(response_id: str, index: int) -> str:
    return f"fc_{id_suffix(response_id)}_{index}"


def reasoning_item(rid: str, text: str, signature: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": rid,
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if signature:
        item["encrypted_content"] = signature
    return item


def message_item(mid: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": mid, "status": status, "role": "assistant", "content": content}


def call_item(fid: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": fid,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def finish_status(reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """(response status, incomplete_details) for a canonical finish reason."""
    incomplete = _INCOMPLETE_REASONS.get(reason or "")
    if incomplete is None:
        return "completed", None
    return "incomplete", {"reason": incomplete}


def output_items(response_id: str, choice: Choice, status: str) -> list[dict[str, Any]]:
    """The output list of a non-stream response: reasoning, message, then function calls."""
    items: list[dict[str, Any]] = []
    if choice.reasoning or choice.reasoning_signature:
        items.append(reasoning_item(item_id("rs", response_id), choice.reasoning, choice.reasoning_signature))
    if choice.text:
        msg_status = "incomplete" if status == "incomplete" else "completed"
        items.append(message_item(item_id("msg", response_id), choice.text, msg_status))
    for i, call in enumerate(choice.tool_calls):
        items.append(call_item(call_item_id(response_id, i), call.id, call.name, call.arguments, "completed"))
    return items


def usage_object(usage: Usage | None) -> dict[str, Any]:
    """Responses usage (zeros when the upstream reported none)."""
    u = usage or Usage()
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def error_object(err: StreamError) -> dict[str, Any]:
    """``Response.error``: the SDK only knows a fixed set of codes, so map onto two of them."""
    code = "rate_limit_exceeded" if err.kind == "rate_limit" else "server_error"
    return {"code": code, "message": err.message}


def _echo(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = raw.get(key)
    if isinstance(value, bool) != (kind is bool):  # bool is an int subclass: keep them apart
        return default
    return value if isinstance(value, kind) else default


def _echo_tools(raw: dict[str, Any]) -> list[dict[str, Any]]:
    tools = raw.get("tools")
    if not isinstance(tools, list):
        return []
    return [
        {
            "type": "function",
            "name": t.get("name"),
            "description": t.get("description"),
            "parameters": t.get("parameters"),
            "strict": t.get("strict", True),
        }
        for t in tools
        if isinstance(t, dict) and t.get("type") == "function"
    ]


def _echo_reasoning(raw: dict[str, Any]) -> dict[str, Any]:
    reasoning = raw.get("reasoning")
    if not isinstance(reasoning, dict):
        return {"effort": None, "summary": None}
    return {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}


def _echo_text(raw: dict[str, Any]) -> dict[str, Any]:
    text = raw.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    return {"format": fmt if isinstance(fmt, dict) else {"type": "text"}}


def response_object(
    ctx: ResponseContext,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete_details: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full Response object; request settings are echoed from ``ctx.request.raw``."""
    raw = ctx.request.raw
    return {
        "id": ctx.id,
        "object": "response",
        "created_at": ctx.created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": _echo(raw, "instructions", str, None),
        "max_output_tokens": _echo(raw, "max_output_tokens", int, None),
        "model": ctx.model,
        "output": output,
        "parallel_tool_calls": _echo(raw, "parallel_tool_calls", bool, True),
        "previous_response_id": _echo(raw, "previous_response_id", str, None),
        "reasoning": _echo_reasoning(raw),
        "store": _echo(raw, "store", bool, True),
        "temperature": _echo(raw, "temperature", (int, float), 1.0),
        "text": _echo_text(raw),
        "tool_choice": _echo(raw, "tool_choice", (str, dict), "auto"),
        "tools": _echo_tools(raw),
        "top_p": _echo(raw, "top_p", (int, float), 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": _echo(raw, "user", str, None),
        "metadata": _echo(raw, "metadata", dict, {}),
    }


# --- streaming ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """The one output item currently open in the stream."""

    kind: str  # "reasoning" | "message" | "function_call"
    id: str
    output_index: int
    text: str = ""  # summary text, message text or call arguments
    signature: str | None = None
    part_open: bool = False  # reasoning: summary part 0 announced
    call_id: str = ""
    name: str = ""


class StreamEncoder:
    """Canonical events -> Responses named-event SSE frames (one instance per response)."""

    def __init__(self, ctx: ResponseContext):
        self._ctx = ctx
        self._seq = 0
        self._done_items: list[dict[str, Any]] = []
        self._open: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._kind_counts: dict[str, int] = {}
        self._usage: Usage | None = None
        self._finish: str | None = None
        self._ended = False

    # --- framing ---

    def _frame(self, etype: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": etype, **fields, "sequence_number": self._seq}
        self._seq += 1
        return b"event: " + etype.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self._ctx, status=status, **extra)

    # --- public interface ---

    def start(self) -> bytes:
        pending = self._response("in_progress", output=[], usage=None)
        return self._frame("response.created", {"response": pending}) + self._frame(
            "response.in_progress", {"response": pending}
        )

    def feed(self, ev: Event) -> bytes:
        if self._ended or getattr(ev, "choice", 0) != 0:
            return b""  # the Responses API has a single candidate
        if isinstance(ev, TextDelta):
            return self._text(ev.text)
        if isinstance(ev, ReasoningDelta):
            return self._reasoning(ev)
        if isinstance(ev, ToolCallStart):
            return self._call_start(ev)
        if isinstance(ev, ToolCallDelta):
            return self._call_delta(ev)
        if isinstance(ev, Finish):
            self._finish = ev.reason
        elif isinstance(ev, Usage):
            self._usage = ev
        elif isinstance(ev, StreamError):
            return self.error(ev)
        return b""

    def finish(self) -> bytes:
        if self._ended:
            return b""
        out = self._close()
        self._ended = True
        status, details = finish_status(self._finish)
        response = self._response(
            status, output=self._done_items, usage=usage_object(self._usage), incomplete_details=details
        )
        etype = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._frame(etype, {"response": response})

    def error(self, err: StreamError) -> bytes:
        """``response.failed`` with what was produced so far; the open item is cut as incomplete."""
        if self._ended:
            return b""
        self._ended = True
        output = list(self._done_items)
        if self._open is not None:
            output.append(self._item_dict(self._open, "incomplete"))
        response = self._response(
            "failed", output=output, usage=usage_object(self._usage), error=error_object(err)
        )
        return self._frame("response.failed", {"response": response})

    # --- items ---

    def _next_id(self, prefix: str) -> str:
        n = self._kind_counts.get(prefix, 0)
        self._kind_counts[prefix] = n + 1
        return item_id(prefix, self._ctx.id, n)

    def _item_dict(self, item: _Item, status: str) -> dict[str, Any]:
        if item.kind == "reasoning":
            return reasoning_item(item.id, item.text, item.signature)
        if item.kind == "message":
            return message_item(item.id, item.text, status)
        return call_item(item.id, item.call_id, item.name, item.text, status)

    def _open_item(self, item: _Item, status_item: dict[str, Any]) -> bytes:
        self._open = item
        return self._frame("response.output_item.added", {"output_index": item.output_index, "item": status_item})

    def _new_item(self, kind: str, prefix: str) -> _Item:
        return _Item(kind=kind, id=self._next_id(prefix), output_index=len(self._done_items))

    def _close(self) -> bytes:
        item = self._open
        if item is None:
            return b""
        self._open = None
        where = {"item_id": item.id, "output_index": item.output_index}
        out = b""
        status = "completed"
        if item.kind == "reasoning" and item.part_open:
            part: dict[str, Any] = {"type": "summary_text", "text": item.text}
            out += self._frame("response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": item.text})
            out += self._frame("response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": part})
        elif item.kind == "message":
            status = "incomplete" if finish_status(self._finish)[0] == "incomplete" else "completed"
            part = {"type": "output_text", "text": item.text, "annotations": []}
            out += self._frame(
                "response.output_text.done", {**where, "content_index": 0, "text": item.text, "logprobs": []}
            )
            out += self._frame("response.content_part.done", {**where, "content_index": 0, "part": part})
        elif item.kind == "function_call":
            out += self._frame("response.function_call_arguments.done", {**where, "arguments": item.text})
        done = self._item_dict(item, status)
        self._done_items.append(done)
        return out + self._frame("response.output_item.done", {"output_index": item.output_index, "item": done})

    def _text(self, text: str) -> bytes:
        if not text:
            return b""
        out = b""
        item = self._open
        if item is None or item.kind != "message":
            out += self._close()
            item = self._new_item("message", "msg")
            out += self._open_item(item, message_item(item.id, None, "in_progress"))
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self._frame(
                "response.content_part.added",
                {"item_id": item.id, "output_index": item.output_index, "content_index": 0, "part": part},
            )
        item.text += text
        where = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
        return out + self._frame("response.output_text.delta", {**where, "delta": text, "logprobs": []})

    def _reasoning(self, ev: ReasoningDelta) -> bytes:
        if not ev.text and not ev.signature:
            return b""
        out = b""
        item = self._open
        if item is None or item.kind != "reasoning":
            out += self._close()
            item = self._new_item("reasoning", "rs")
            out += self._open_item(item, reasoning_item(item.id, "", None))
        if ev.signature:
            item.signature = (item.signature or "") + ev.signature
        if not ev.text:
            return out
        where = {"item_id": item.id, "output_index": item.output_index, "summary_index": 0}
        if not item.part_open:
            item.part_open = True
            part = {"type": "summary_text", "text": ""}
            out += self._frame("response.reasoning_summary_part.added", {**where, "part": part})
        item.text += ev.text
        return out + self._frame("response.reasoning_summary_text.delta", {**where, "delta": ev.text})

    def _call_start(self, ev: ToolCallStart) -> bytes:
        if ev.index in self._calls:
            return b""
        out = self._close()
        item = _Item(
            kind="function_call",
            id=call_item_id(self._ctx.id, ev.index),
            output_index=len(self._done_items),
            call_id=ev.id,
            name=ev.name,
        )
        self._calls[ev.index] = item
        return out + self._open_item(item, call_item(item.id, ev.id, ev.name, "", "in_progress"))

    def _call_delta(self, ev: ToolCallDelta) -> bytes:
        item = self._calls.get(ev.index)
        if item is None or not ev.arguments:
            return b""
        item.text += ev.arguments
        if item is not self._open:
            # A late fragment for an already closed call: the SDK cannot reopen an item, so it only
            # reaches the client through the final response; keep that one complete.
            self._patch_done_call(item)
            return b""
        where = {"item_id": item.id, "output_index": item.output_index}
        return self._frame("response.function_call_arguments.delta", {**where, "delta": ev.arguments})

    def _patch_done_call(self, item: _Item) -> None:
        done = self._done_items[item.output_index]
        self._done_items[item.output_index] = {**done, "arguments": item.text}
