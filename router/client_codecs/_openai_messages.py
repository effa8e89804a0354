"""OpenAI chat ``messages`` -> canonical system prompt + messages (a helper of ``openai_chat``).

Not a codec itself (it has no ``CODEC``). Raises only :class:`BadRequest` with the field path
(``messages[2].content[0].image_url.url``) of whatever is malformed.

A tool call's ``extra_content.google.thought_signature`` (where Gemini's own OpenAI-compatible
endpoint, and this gateway, hand out the signature of the reasoning behind the call) becomes a
signed thinking part in front of the call, so a Gemini upstream gets it back on the functionCall.

Deprecated forms are mapped too: an assistant ``function_call`` becomes a tool call with a
synthesized id (``call_<message index>_<name>``), and a later ``function`` role message with that
name becomes its tool result.
"""

from __future__ import annotations

from typing import Any

from router.canonical import fill_call_signatures
from router.client_codecs._openai_signatures import call_signature
from router.errors import BadRequest

Part = dict[str, Any]
Message = dict[str, Any]


class _State:
    """Per-request bookkeeping: tool-call id -> name, and pending legacy function-call ids."""

    __slots__ = ("names", "legacy_ids")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.legacy_ids: dict[str, str] = {}


def decode_messages(messages: list[Any]) -> tuple[str | None, list[Message]]:
    """Split system/developer messages out (joined by a blank line) and decode the rest."""
    system: list[str] = []
    out: list[Message] = []
    state = _State()
    for i, msg in enumerate(messages):
        if type(msg) is dict and type(content := msg.get("content")) is str:  # the common plain-text turn
            role = msg.get("role")
            if role == "user":
                out.append({"role": "user", "content": [{"type": "text", "text": content}]})
                continue
            if role in ("system", "developer"):
                system.append(content)
                continue
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise BadRequest("each message must be an object", param=p)
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_only(msg.get("content"), f"{p}.content", "\n\n"))
        elif role == "user":
            out.append({"role": "user", "content": _user_content(msg.get("content"), f"{p}.content")})
        elif role == "assistant":
            out.append(_assistant(msg, i, p, state))
        elif role == "tool":
            out.append(_tool(msg, p, state))
        elif role == "function":
            out.append(_function(msg, p, state))
        else:
            raise BadRequest(
                "role must be one of system, developer, user, assistant, tool, function",
                param=f"{p}.role",
            )
    return ("\n\n".join(system) if system else None), out


def _text_of(part: Any, param: str) -> str:
    if not isinstance(part, dict):
        raise BadRequest("each content part must be an object", param=param)
    if part.get("type") != "text":
        raise BadRequest("only text content parts are allowed here", param=f"{param}.type")
    text = part.get("text")
    if not isinstance(text, str):
        raise BadRequest("a text part needs a string 'text'", param=f"{param}.text")
    return text


def _text_only(content: Any, param: str, sep: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(_text_of(part, f"{param}[{j}]") for j, part in enumerate(content))
    raise BadRequest("content must be a string or an array of text parts", param=param)


def _image(url: Any, param: str) -> Part:
    if not isinstance(url, str):
        raise BadRequest("image_url.url must be a string", param=param)
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type = header.split(";", 1)[0]
        if not sep or not header.endswith(";base64") or "/" not in media_type or not data:
            raise BadRequest("an image data URL must be data:<media type>;base64,<data>", param=param)
        return {"type": "image", "url": None, "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "url": url, "media_type": None, "data": None}
    raise BadRequest("image_url.url must be an http(s) or data: URL", param=param)


def _user_part(part: Any, param: str) -> Part:
    if not isinstance(part, dict):
        raise BadRequest("each content part must be an object", param=param)
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": _text_of(part, param)}
    if kind == "image_url":
        spec = part.get("image_url")
        if isinstance(spec, dict):
            return _image(spec.get("url"), f"{param}.image_url.url")
        return _image(spec, f"{param}.image_url")
    raise BadRequest(f"unsupported content part type {kind!r}", param=f"{param}.type")


def _user_content(content: Any, param: str) -> list[Part]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [_user_part(part, f"{param}[{j}]") for j, part in enumerate(content)]
    raise BadRequest("user content must be a string or an array of parts", param=param)


def _assistant_text(content: Any, param: str) -> list[Part]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest("assistant content must be a string, null or an array of parts", param=param)
    parts = []
    for j, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") == "refusal":
            refusal = part.get("refusal")
            if not isinstance(refusal, str):
                raise BadRequest("a refusal part needs a string 'refusal'", param=f"{param}[{j}].refusal")
            parts.append({"type": "text", "text": refusal})
        else:
            parts.append({"type": "text", "text": _text_of(part, f"{param}[{j}]")})
    return parts


def _call_part(call: Any, param: str) -> Part:
    if not isinstance(call, dict):
        raise BadRequest("a tool call must be an object", param=param)
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest("a tool call needs a string 'id'", param=f"{param}.id")
    fn = call.get("function")
    if not isinstance(fn, dict):
        raise BadRequest("a tool call needs a 'function' object", param=f"{param}.function")
    return _function_part(call_id, fn, f"{param}.function")


def _function_part(call_id: str, fn: dict[str, Any], param: str) -> Part:
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("a function call needs a string 'name'", param=f"{param}.name")
    args = fn.get("arguments", "")
    if args is None:
        args = ""
    if not isinstance(args, str):
        raise BadRequest("function arguments must be a JSON string", param=f"{param}.arguments")
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": args}


def _assistant(msg: dict[str, Any], i: int, p: str, state: _State) -> Message:
    parts: list[Part] = []
    reasoning = msg.get("reasoning_content")
    if reasoning is not None and not isinstance(reasoning, str):
        raise BadRequest("reasoning_content must be a string", param=f"{p}.reasoning_content")
    if reasoning:
        parts.append({"type": "thinking", "text": reasoning, "signature": None})
    parts.extend(_assistant_text(msg.get("content"), f"{p}.content"))
    calls = msg.get("tool_calls")
    signatures: dict[str, str] = {}
    if calls is not None:
        if not isinstance(calls, list):
            raise BadRequest("tool_calls must be an array", param=f"{p}.tool_calls")
        for k, call in enumerate(calls):
            part = _call_part(call, f"{p}.tool_calls[{k}]")
            state.names[part["id"]] = part["name"]
            parts.append(part)
            signature = call_signature(call, f"{p}.tool_calls[{k}]")
            if signature:
                signatures[part["id"]] = signature
    legacy = msg.get("function_call")
    if legacy is not None:
        if not isinstance(legacy, dict):
            raise BadRequest("function_call must be an object", param=f"{p}.function_call")
        name = legacy.get("name")
        part = _function_part(f"call_{i}_{name}", legacy, f"{p}.function_call")
        state.names[part["id"]] = part["name"]
        state.legacy_ids[part["name"]] = part["id"]
        parts.append(part)
    if signatures:
        parts = fill_call_signatures(parts, lambda call: signatures.get(call["id"]))
    return {"role": "assistant", "content": parts}


def _tool_result(call_id: str, name: str | None, content: str) -> Message:
    part = {"type": "tool_result", "tool_call_id": call_id, "name": name, "content": content, "is_error": False}
    return {"role": "tool", "content": [part]}


def _tool(msg: dict[str, Any], p: str, state: _State) -> Message:
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest("a tool message needs a string 'tool_call_id'", param=f"{p}.tool_call_id")
    content = _text_only(msg.get("content"), f"{p}.content", "")
    return _tool_result(call_id, state.names.get(call_id), content)


def _function(msg: dict[str, Any], p: str, state: _State) -> Message:
    name = msg.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("a function message needs a string 'name'", param=f"{p}.name")
    content = msg.get("content")
    if content is None:
        content = ""
    content = _text_only(content, f"{p}.content", "")
    call_id = state.legacy_ids.pop(name, None) or f"call_{name}"
    return _tool_result(call_id, name, content)
