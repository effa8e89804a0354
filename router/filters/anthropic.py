"""Template filters: canonical request pieces → Anthropic Messages request fields.

Used from request templates, e.g.::

    messages: "{{ request.messages | anthropic_messages }}"
    system: "{{ request.system | anthropic_system }}"
    tools: "{{ request.tools | anthropic_tools }}"
    tool_choice: "{{ request.tool_choice
                     | anthropic_tool_choice(request.parallel_tool_calls, request.tools) }}"
    thinking: "{{ request.reasoning | anthropic_thinking(request.tool_choice) }}"
    max_tokens: "{{ request | anthropic_max_tokens }}"
    temperature: "{{ request | anthropic_temperature }}"
    top_p: "{{ request | anthropic_top_p }}"
    top_k: "{{ request | anthropic_top_k }}"
    output_config: "{{ request.response_format | anthropic_output_config }}"

Every filter returns None for "nothing to send" so the template prunes the field. Inputs are
canonical (already validated by a client codec); the filters are still defensive about absent
or oddly typed values and never raise on them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024
EFFORT_BUDGETS: dict[str, int] = {
    "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768,
}
DEFAULT_EFFORT = "medium"
THINKING_MIN_TOP_P = 0.95
OFF_EFFORTS = ("none", "off", "disabled")
DEFAULT_IMAGE_TYPE = "image/png"
_DATA_URL = re.compile(r"^data:(?P<mt>[^;,]+)?(?:;[^,]*)?;base64,(?P<data>.*)$", re.DOTALL)

_TOOLS_UNKNOWN = object()  # sentinel: the template did not pass the request's tools
_CHOICE_TYPES: dict[str, str] = {"auto": "auto", "none": "none", "required": "any"}

# blocks each Anthropic role may carry; anything else is dropped
_ROLE_BLOCKS = {
    "user": ("text", "image", "tool_result"),
    "assistant": ("text", "tool_use", "thinking", "redacted_thinking"),
}


def anthropic_messages(messages: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Canonical messages → Anthropic ``messages``.

    Tool messages become user turns of ``tool_result`` blocks; consecutive turns of one role are
    merged (so tool results and a following user message share one turn, results first); thinking
    parts without a signature, empty text and empty turns are dropped.
    """
    return role_turns(messages, _block, _block_type, _ROLE_BLOCKS, "tool_result")


def _block_type(block: dict[str, Any]) -> str:
    return str(block["type"])


def role_turns(messages: list[dict[str, Any]] | None, block: Callable[[dict[str, Any]], dict[str, Any] | None],
               kind: Callable[[dict[str, Any]], str], role_blocks: Mapping[str, tuple[str, ...]],
               result_kind: str) -> list[dict[str, Any]]:
    """Canonical messages as alternating user and assistant turns, for the formats that want them
    (Anthropic Messages, Bedrock Converse): each part made a ``block`` of some ``kind``; blocks a role
    may not carry dropped; consecutive turns of one role merged, with the tool results
    (``result_kind``) first in a user turn, as both APIs want; empty turns dropped."""
    turns: list[dict[str, Any]] = []
    for message in messages or []:
        if not isinstance(message, dict):
            continue
        role = "assistant" if message.get("role") == "assistant" else "user"
        blocks = [b for b in map(block, _parts(message)) if b and kind(b) in role_blocks[role]]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: kind(b) != result_kind)
    return turns


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return []
    return [p for p in content if isinstance(p, dict)]


def _block(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "image":
        return _image_block(part)
    if kind == "tool_call":
        return {"type": "tool_use", "id": part.get("id") or "", "name": part.get("name") or "",
                "input": _tool_input(part.get("arguments"))}
    if kind == "tool_result":
        return _tool_result_block(part)
    if kind == "thinking":
        return _thinking_block(part)
    return None


def inline_image(part: dict[str, Any]) -> tuple[Any, str] | str | None:
    """A canonical image part as (its media type or None, its base64 data) when the bytes are inline
    (a ``data:`` URL or ``data``), its URL when it is a link to fetch, None when it holds neither."""
    url = part.get("url")
    if isinstance(url, str) and url:
        match = _DATA_URL.match(url)
        if match is None:
            return url
        media_type, data = match.group("mt"), match.group("data")
    else:
        media_type, data = part.get("media_type"), part.get("data")
    return (media_type, data) if isinstance(data, str) and data else None


def _image_block(part: dict[str, Any]) -> dict[str, Any] | None:
    image = inline_image(part)
    if image is None:
        return None
    if isinstance(image, str):
        return {"type": "image", "source": {"type": "url", "url": image}}
    media_type, data = image
    return {"type": "image", "source": {"type": "base64", "media_type": media_type or DEFAULT_IMAGE_TYPE,
                                        "data": data}}


def _tool_result_block(part: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.get("tool_call_id") or ""}
    content = part.get("content")
    if isinstance(content, str) and content:
        block["content"] = content
    if part.get("is_error"):
        block["is_error"] = True
    return block


def _thinking_block(part: dict[str, Any]) -> dict[str, Any] | None:
    signature = part.get("signature")
    if not isinstance(signature, str) or not signature:
        return None  # Anthropic rejects unsigned thinking; other providers' thoughts are dropped
    if part.get("redacted"):
        return {"type": "redacted_thinking", "data": signature}
    return {"type": "thinking", "thinking": part.get("text") or "", "signature": signature}


def _tool_input(arguments: Any) -> dict[str, Any]:
    """JSON-string arguments → the object ``input`` must be (raw text kept if not an object)."""
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": arguments}


def anthropic_system(system: str | None) -> str | None:
    """The canonical system prompt as Anthropic ``system`` (None when empty)."""
    return system if isinstance(system, str) and system else None


def anthropic_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Canonical tools → ``[{name, description?, input_schema}]`` (None when there are none)."""
    out: list[dict[str, Any]] = []
    for tool in tools or []:
        if not isinstance(tool, dict) or not tool.get("name"):
            continue
        entry: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            entry["description"] = tool["description"]
        entry["input_schema"] = _input_schema(tool.get("parameters"))
        out.append(entry)
    return out or None


def _input_schema(parameters: Any) -> dict[str, Any]:
    if not isinstance(parameters, dict) or not parameters:
        return {"type": "object", "properties": {}}  # fresh: templates may mutate the result
    if "type" not in parameters:  # Anthropic requires an object schema
        return {"type": "object", **parameters}
    return parameters


def anthropic_tool_choice(tool_choice: str | dict[str, Any] | None,
                          parallel_tool_calls: bool | None = None,
                          tools: Any = _TOOLS_UNKNOWN) -> dict[str, Any] | None:
    """Canonical tool choice → ``{type: auto|any|none|tool}`` (+ ``disable_parallel_tool_use``).

    Pass the request's ``tools`` as the third argument when available: Anthropic rejects a
    tool_choice without tools, so with no tools this returns None; with tools, no tool choice and
    ``parallel_tool_calls`` False it returns ``{type: auto, disable_parallel_tool_use: true}``.
    """
    if tools is not _TOOLS_UNKNOWN and not tools:
        return None
    choice: dict[str, Any] | None
    if tool_choice is None:
        serial = parallel_tool_calls is False and tools is not _TOOLS_UNKNOWN
        choice = {"type": "auto"} if serial else None
    elif isinstance(tool_choice, dict):
        name = tool_choice.get("name")
        choice = {"type": "tool", "name": name} if isinstance(name, str) and name else None
    else:
        kind = _CHOICE_TYPES.get(tool_choice) if isinstance(tool_choice, str) else None
        choice = {"type": kind} if kind else None
    if choice is not None and parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def anthropic_thinking(reasoning: dict[str, Any] | None,
                       tool_choice: str | dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Canonical reasoning → ``{type: enabled, budget_tokens}`` or None (thinking off).

    An explicit budget wins (raised to Anthropic's minimum of 1024; 0 turns thinking off);
    otherwise the effort maps to low/minimal 1024, medium 8192, high 24576, xhigh/max 32768
    (unknown or unset effort: medium); effort ``none`` turns thinking off. When the request's
    ``tool_choice`` is passed and forces a tool (``required`` or named), thinking is off:
    Anthropic rejects thinking with forced tool use.
    """
    if tool_choice == "required" or isinstance(tool_choice, dict):
        return None
    budget = _thinking_budget(reasoning)
    return None if budget is None else {"type": "enabled", "budget_tokens": budget}


def _thinking_budget(reasoning: Any) -> int | None:
    if not isinstance(reasoning, dict):
        return None
    budget = reasoning.get("budget")
    effort = reasoning.get("effort")
    if isinstance(budget, int) and not isinstance(budget, bool):
        return max(MIN_THINKING_BUDGET, budget) if budget > 0 else None
    if effort in OFF_EFFORTS:
        return None
    if isinstance(effort, str) and effort in EFFORT_BUDGETS:
        return EFFORT_BUDGETS[effort]
    return EFFORT_BUDGETS[DEFAULT_EFFORT]


def anthropic_output_config(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """Canonical response_format → ``output_config: {format: {type: json_schema, schema}}``.

    ``json_object`` (no schema) becomes the schema ``{"type": "object"}``; ``text`` or nothing
    → None. (Real Anthropic may want ``additionalProperties: false`` on object schemas: the
    schema is passed through unchanged.)
    """
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    schema = response_format.get("schema")
    if kind == "json_schema" and isinstance(schema, dict):
        return {"format": {"type": "json_schema", "schema": schema}}
    if kind in ("json_object", "json_schema"):
        return {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    return None


def _field(request: Any, name: str) -> Any:
    if isinstance(request, dict):
        return request.get(name)
    return getattr(request, name, None)


def anthropic_max_tokens(request: Any) -> int:
    """``max_tokens`` (required by Anthropic): the request's, else 4096.

    When thinking is on and max_tokens does not exceed the budget, the budget is added on top,
    because Anthropic requires ``max_tokens > budget_tokens``.
    """
    max_tokens = _field(request, "max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        max_tokens = DEFAULT_MAX_TOKENS
    budget = _thinking_budget(_field(request, "reasoning"))
    if budget is not None and max_tokens <= budget:
        max_tokens += budget
    return max_tokens


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _thinking_requested(request: Any) -> bool:
    # deliberately ignores tool_choice: dropping a sampling knob is harmless, a clash is a 400
    return _thinking_budget(_field(request, "reasoning")) is not None


def anthropic_temperature(request: Any) -> float | None:
    """``temperature`` clamped to Anthropic's 0-1; None when thinking is on (it must be unset)."""
    temperature = _number(_field(request, "temperature"))
    if temperature is None or _thinking_requested(request):
        return None
    return min(1.0, max(0.0, temperature))


def anthropic_top_p(request: Any) -> float | None:
    """``top_p`` clamped to 0-1, and to 0.95-1 when thinking is on (Anthropic's rule)."""
    top_p = _number(_field(request, "top_p"))
    if top_p is None:
        return None
    low = THINKING_MIN_TOP_P if _thinking_requested(request) else 0.0
    return min(1.0, max(low, top_p))


def anthropic_top_k(request: Any) -> int | None:
    """``top_k``; None when thinking is on (Anthropic rejects top_k with thinking)."""
    top_k = _field(request, "top_k")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        return None
    return None if _thinking_requested(request) else top_k


FILTERS: dict[str, Callable[..., Any]] = {
    "anthropic_messages": anthropic_messages,
    "anthropic_system": anthropic_system,
    "anthropic_tools": anthropic_tools,
    "anthropic_tool_choice": anthropic_tool_choice,
    "anthropic_thinking": anthropic_thinking,
    "anthropic_max_tokens": anthropic_max_tokens,
    "anthropic_temperature": anthropic_temperature,
    "anthropic_top_p": anthropic_top_p,
    "anthropic_top_k": anthropic_top_k,
    "anthropic_output_config": anthropic_output_config,
}
