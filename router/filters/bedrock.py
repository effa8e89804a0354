"""Template filters: canonical request pieces → the fields of an AWS Bedrock Converse request.

Used from request templates, e.g.::

    messages: "{{ request.messages | bedrock_messages }}"
    system: "{{ request.system | bedrock_system }}"
    inferenceConfig: "{{ request | bedrock_inference_config(model) }}"
    toolConfig: "{{ request | bedrock_tool_config }}"
    additionalModelRequestFields: "{{ request | bedrock_additional_fields(model) }}"

Every filter returns None for "nothing to send" so the template prunes the field. Decisions:

* Images: Converse takes bytes (``{"image": {"format", "source": {"bytes": base64}}}``), not URLs: a
  data URL or inline data becomes bytes, an http(s) URL is dropped.
* Thinking parts go back as ``reasoningContent`` only with their signature (like Anthropic's).
* Converse has no ``tool_choice: none``: the tools are still sent (a conversation with tool calls needs
  them) with the model left to choose.
* Reasoning and ``top_k`` reach Anthropic Claude models (an id with ``anthropic.``, inference profiles
  such as ``us.anthropic....`` included) through ``additionalModelRequestFields`` the way the
  Anthropic API takes them (``thinking``, ``top_k``), with Anthropic's rules: with thinking on,
  ``maxTokens`` exceeds the budget, no temperature, ``topP`` at least 0.95, no ``top_k``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from router.filters.anthropic import (
    _field,
    _number,
    _tool_input,
    anthropic_max_tokens,
    anthropic_temperature,
    anthropic_thinking,
    anthropic_top_k,
    anthropic_top_p,
    inline_image,
    role_turns,
)

IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
_ROLE_BLOCKS = {"user": ("text", "image", "toolResult"), "assistant": ("text", "toolUse", "reasoningContent")}


def bedrock_messages(messages: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Canonical messages → Converse ``messages``: tool messages become user turns of ``toolResult``
    blocks, consecutive turns of one role are merged (results first in a user turn), empty turns dropped."""
    return role_turns(messages, _block, _block_kind, _ROLE_BLOCKS, "toolResult")


def _block_kind(block: dict[str, Any]) -> str:
    return next(iter(block))  # a Converse content block has one key: its kind


def _block(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return {"text": text} if isinstance(text, str) and text else None
    if kind == "image":
        return _image(part)
    if kind == "tool_call":
        return {"toolUse": {"toolUseId": part.get("id") or "", "name": part.get("name") or "",
                            "input": _tool_input(part.get("arguments"))}}
    if kind == "tool_result":
        content = part.get("content")
        result = {"toolUseId": part.get("tool_call_id") or "",
                  "content": [{"text": content if isinstance(content, str) and content else " "}]}
        if part.get("is_error"):  # only Claude models take ``status``: sent only when it matters
            result["status"] = "error"
        return {"toolResult": result}
    if kind == "thinking":
        signature = part.get("signature")
        if not isinstance(signature, str) or not signature or part.get("redacted"):
            return None
        return {"reasoningContent": {"reasoningText": {"text": part.get("text") or "", "signature": signature}}}
    return None


def _image(part: dict[str, Any]) -> dict[str, Any] | None:
    image = inline_image(part)
    if image is None or isinstance(image, str):
        return None  # nothing, or a URL: Converse cannot fetch one
    media_type, data = image
    fmt = media_type.rpartition("/")[2].lower().replace("jpg", "jpeg") if isinstance(media_type, str) else ""
    return {"image": {"format": fmt if fmt in IMAGE_FORMATS else "png", "source": {"bytes": data}}}


def bedrock_system(system: str | None) -> list[dict[str, str]] | None:
    """The system prompt as ``[{"text": ...}]`` (None when empty)."""
    return [{"text": system}] if isinstance(system, str) and system else None


def _claude(model: Any) -> bool:
    return isinstance(model, str) and "anthropic." in model


def _thinking(request: Any, model: Any) -> dict[str, Any] | None:
    if not _claude(model):
        return None
    return anthropic_thinking(_field(request, "reasoning"), _field(request, "tool_choice"))


def bedrock_inference_config(request: Any, model: Any = None) -> dict[str, Any] | None:
    """``{maxTokens, temperature, topP, stopSequences}`` from the request (None when none is set); for a
    Claude model with thinking on, Anthropic's rules apply (see the module doc)."""
    config: dict[str, Any] = {}
    thinking = _thinking(request, model) is not None
    max_tokens = anthropic_max_tokens(request) if thinking else _field(request, "max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
        config["maxTokens"] = max_tokens
    temperature = anthropic_temperature(request) if _claude(model) else _number(_field(request, "temperature"))
    if temperature is not None and not thinking:
        config["temperature"] = min(1.0, max(0.0, temperature))
    top_p = anthropic_top_p(request) if thinking else _number(_field(request, "top_p"))
    if top_p is not None:
        config["topP"] = min(1.0, max(0.0, top_p))
    stop = _field(request, "stop")
    if isinstance(stop, list) and stop:
        config["stopSequences"] = [s for s in stop if isinstance(s, str)]
    return config or None


def bedrock_additional_fields(request: Any, model: Any = None) -> dict[str, Any] | None:
    """``additionalModelRequestFields`` for a Claude model: ``thinking`` and ``top_k`` (None otherwise)."""
    if not _claude(model):
        return None
    fields: dict[str, Any] = {}
    thinking = _thinking(request, model)
    if thinking is not None:
        fields["thinking"] = thinking
    top_k = anthropic_top_k(request)
    if top_k is not None and thinking is None:
        fields["top_k"] = top_k
    return fields or None


def bedrock_tool_config(request: Any) -> dict[str, Any] | None:
    """``{tools: [{toolSpec}], toolChoice?}`` (None without tools)."""
    tools = []
    for tool in _field(request, "tools") or []:
        if not isinstance(tool, dict) or not tool.get("name"):
            continue
        spec: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            spec["description"] = tool["description"]
        parameters = tool.get("parameters")
        schema = parameters if isinstance(parameters, dict) and parameters else {"type": "object", "properties": {}}
        spec["inputSchema"] = {"json": schema if "type" in schema else {"type": "object", **schema}}
        tools.append({"toolSpec": spec})
    if not tools:
        return None
    config: dict[str, Any] = {"tools": tools}
    choice = _tool_choice(_field(request, "tool_choice"))
    if choice is not None:
        config["toolChoice"] = choice
    return config


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = choice.get("name")
        return {"tool": {"name": name}} if isinstance(name, str) and name else None
    return {"any": {}} if choice == "required" else None


FILTERS: dict[str, Callable[..., Any]] = {
    "bedrock_messages": bedrock_messages,
    "bedrock_system": bedrock_system,
    "bedrock_inference_config": bedrock_inference_config,
    "bedrock_tool_config": bedrock_tool_config,
    "bedrock_additional_fields": bedrock_additional_fields,
}
