"""Template filters: canonical request pieces -> OpenAI Chat Completions request fields.

Each filter returns ``None`` when there is nothing to send, so the template engine prunes the field.
Inputs are canonical (already validated by a client codec); filters read them leniently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

Message = dict[str, Any]


def _image_url(part: Mapping[str, Any]) -> dict[str, Any]:
    url = part.get("url")
    if not url:
        url = f"data:{part.get('media_type') or 'application/octet-stream'};base64,{part.get('data') or ''}"
    return {"type": "image_url", "image_url": {"url": url}}


def _user(parts: list[Mapping[str, Any]]) -> Message:
    if len(parts) == 1 and parts[0].get("type") == "text":
        return {"role": "user", "content": parts[0].get("text", "")}
    content: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type")
        if kind == "text":
            content.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image":
            content.append(_image_url(part))
    return {"role": "user", "content": content}


def _assistant(parts: list[Mapping[str, Any]]) -> Message:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type")
        if kind == "text":
            texts.append(part.get("text", ""))
        elif kind == "tool_call":
            fn = {"name": part.get("name", ""), "arguments": part.get("arguments") or "{}"}
            calls.append({"id": part.get("id", ""), "type": "function", "function": fn})
    msg: Message = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_result(part: Mapping[str, Any]) -> Message:
    return {"role": "tool", "tool_call_id": part.get("tool_call_id", ""), "content": part.get("content", "")}


def openai_messages(messages: list[Mapping[str, Any]] | None, system: str | None = None) -> list[Message]:
    """Canonical messages (+ system prompt) -> OpenAI chat ``messages``.

    Thinking parts are dropped. ``tool_result`` parts become one ``tool`` message each, wherever
    they appear; other parts of the same message follow as their own message.
    """
    out: list[Message] = [{"role": "system", "content": system}] if system else []
    for msg in messages or ():
        role = msg.get("role")
        parts = msg.get("content") or []
        if isinstance(parts, str):
            parts = [{"type": "text", "text": parts}]
        rest = []
        for part in parts:
            if part.get("type") == "tool_result":
                out.append(_tool_result(part))
            elif part.get("type") != "thinking":
                rest.append(part)
        if role == "assistant":
            if rest:
                out.append(_assistant(rest))
        elif rest:
            out.append(_user(rest))
    return out


def openai_tools(tools: list[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Canonical tools -> ``[{type: function, function: {name, description?, parameters?}}]``."""
    if not tools:
        return None
    out = []
    for tool in tools:
        fn: dict[str, Any] = {"name": tool.get("name", "")}
        if tool.get("description") is not None:
            fn["description"] = tool["description"]
        if tool.get("parameters") is not None:
            fn["parameters"] = tool["parameters"]
        out.append({"type": "function", "function": fn})
    return out


def openai_tool_choice(tool_choice: str | Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    """``auto|none|required`` pass through; ``{name}`` -> ``{type: function, function: {name}}``."""
    if tool_choice is None or isinstance(tool_choice, str):
        return tool_choice
    return {"type": "function", "function": {"name": tool_choice.get("name", "")}}


def openai_response_format(response_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Canonical response format -> OpenAI ``response_format``."""
    if not response_format:
        return None
    kind = response_format.get("type") or "text"
    if kind != "json_schema":
        return {"type": kind}
    spec: dict[str, Any] = {
        "name": response_format.get("name") or "response",
        "schema": response_format.get("schema") or {},
    }
    if response_format.get("strict") is not None:
        spec["strict"] = response_format["strict"]
    return {"type": "json_schema", "json_schema": spec}


def openai_reasoning_effort(reasoning: Mapping[str, Any] | None) -> str | None:
    """``reasoning.effort``, or one derived from a token budget (<=1024 low, <=8192 medium, else high)."""
    if not reasoning:
        return None
    effort = reasoning.get("effort")
    if effort:
        return str(effort)
    budget = reasoning.get("budget")
    if budget is None or isinstance(budget, bool) or not isinstance(budget, int):
        return None
    if budget <= 1024:
        return "low"
    return "medium" if budget <= 8192 else "high"


def openai_stream_options(request: Any) -> dict[str, bool] | None:
    """``{"include_usage": true}`` when streaming (the gateway always wants usage), else None."""
    stream = request.get("stream") if isinstance(request, Mapping) else getattr(request, "stream", False)
    return {"include_usage": True} if stream else None


def openai_stream_usage(body: Any) -> Any:
    """A same-format (passthrough) body that streams, asking for usage: the gateway always wants it
    (usage, limits, budgets); the client's stream shows it only when the client asked (its codec
    reads the client's own ``stream_options``). Any other body as it is."""
    if not isinstance(body, Mapping) or body.get("stream") is not True:
        return body
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage") is True:
        return body
    return {**body, "stream_options": {**(options if isinstance(options, Mapping) else {}), "include_usage": True}}


FILTERS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {
        "openai_messages": openai_messages,
        "openai_tools": openai_tools,
        "openai_tool_choice": openai_tool_choice,
        "openai_response_format": openai_response_format,
        "openai_reasoning_effort": openai_reasoning_effort,
        "openai_stream_options": openai_stream_options,
        "openai_stream_usage": openai_stream_usage,
    }
)
