"""Client codec: the OpenAI Responses API (``POST /v1/responses``).

Decoding notes:
- ``instructions`` comes first in the system prompt, then system/developer messages from ``input``.
- Assistant-side items (reasoning, assistant messages, function calls) that follow each other merge
  into one canonical assistant message; each ``function_call_output`` becomes its own tool message.
- ``item_reference`` items are rejected: the gateway keeps no item store. Clients replay the items
  or use ``previous_response_id`` (the engine resolves it with :class:`ResponseStore` and
  :func:`apply_previous`; ``store`` and ``previous_response_id`` stay in ``raw``).
- ``input_image`` by ``file_id`` and ``input_file`` parts are rejected: there is no file store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from router.canonical import CanonicalRequest, Choice, Event, ResponseContext, aggregate
from router.client_codecs._fields import OPENAI_RESPONSES as fields
from router.client_codecs.openai_chat import FAMILY
from router.client_codecs.openai_responses_stream import (
    StreamEncoder,
    error_object,
    finish_status,
    output_items,
    response_object,
    usage_object,
)
from router.codecs import ClientCodec, Stores
from router.errors import BadRequest, GatewayError
from router.response_store import apply_previous, conversation_after

__all__ = [
    "NAME",
    "StreamEncoder",
    "apply_previous",
    "conversation_after",
    "decode_request",
    "encode_response",
    "error_body",
]

NAME = "openai.responses"

_TEXT_PARTS = ("input_text", "output_text", "text")
_TOOL_CHOICE_MODES = ("auto", "none", "required")
_FORMAT_TYPES = ("text", "json_object", "json_schema")
_ROLES = ("user", "system", "developer", "assistant")
_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "not_found": "invalid_request_error",
    "method_not_allowed": "invalid_request_error",
    "request_timeout": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "rate_limit": "rate_limit_error",
    "quota": "insufficient_quota",
}


# --- input items -------------------------------------------------------------------------------


def _image_part(part: Mapping[str, Any], path: str) -> dict[str, Any]:
    if part.get("file_id") is not None:
        raise BadRequest("images by file_id are not supported; send image_url", param=f"{path}.file_id")
    url = fields.req_str(part, "image_url", path, empty=False)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "url": url, "media_type": None, "data": None}
    header, sep, data = url.partition(",")
    if url.startswith("data:") and sep and header.endswith(";base64") and data:
        media_type = header[len("data:") : -len(";base64")] or None
        return {"type": "image", "url": None, "media_type": media_type, "data": data}
    raise BadRequest("image_url must be an http(s) URL or a base64 data: URL", param=f"{path}.image_url")


def _content_part(part: Any, path: str, images: bool) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise BadRequest("a content part must be an object", param=path)
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": fields.req_str(part, "text", path)}
    if kind == "refusal":
        return {"type": "text", "text": fields.req_str(part, "refusal", path)}
    if kind == "input_image" and images:
        return _image_part(part, path)
    raise BadRequest(f"content part type {kind!r} is not supported here", param=f"{path}.type")


def _content(content: Any, path: str, images: bool) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"'{path}' must be a string or an array of content parts", param=path)
    return [_content_part(part, f"{path}[{j}]", images) for j, part in enumerate(content)]


def _plain_text(content: Any, path: str) -> str:
    return "\n".join(part["text"] for part in _content(content, path, images=False))


def _summary_text(item: Mapping[str, Any], path: str) -> str:
    texts: list[str] = []
    for key in ("summary", "content"):  # reasoning_text content only when there is no summary
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list):
            raise BadRequest(f"'{path}.{key}' must be an array", param=f"{path}.{key}")
        for j, part in enumerate(parts):
            if not isinstance(part, dict):
                raise BadRequest("a reasoning part must be an object", param=f"{path}.{key}[{j}]")
            texts.append(fields.req_str(part, "text", f"{path}.{key}[{j}]"))
        if texts:
            break
    return "\n\n".join(texts)


class _InputDecoder:
    """Folds ``input`` items into canonical messages plus system text (one instance per request)."""

    def __init__(self, system: list[str]):
        self.system = system
        self.messages: list[dict[str, Any]] = []
        self._call_names: dict[str, str] = {}
        self._handlers: dict[str, Callable[[dict[str, Any], str], None]] = {
            "message": self._message,
            "function_call": self._function_call,
            "function_call_output": self._function_call_output,
            "reasoning": self._reasoning,
            "item_reference": self._item_reference,
        }

    def item(self, item: Any, path: str) -> None:
        if not isinstance(item, dict):
            raise BadRequest("an input item must be an object", param=path)
        kind = item.get("type") or "message"  # EasyInputMessage has no type
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise BadRequest(f"input item type {kind!r} is not supported", param=f"{path}.type")
        handler(item, path)

    def _assistant(self) -> list[dict[str, Any]]:
        """The content of the trailing assistant message, started if needed (merges a turn)."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            self.messages.append({"role": "assistant", "content": []})
        content: list[dict[str, Any]] = self.messages[-1]["content"]
        return content

    def _message(self, item: dict[str, Any], path: str) -> None:
        role = item.get("role")
        if role not in _ROLES:
            raise BadRequest(f"role must be one of {', '.join(_ROLES)}", param=f"{path}.role")
        content = item.get("content")
        if role in ("system", "developer"):
            self.system.append(_plain_text(content, f"{path}.content"))
        elif role == "user":
            self.messages.append({"role": "user", "content": _content(content, f"{path}.content", True)})
        else:
            self._assistant().extend(_content(content, f"{path}.content", False))

    def _function_call(self, item: dict[str, Any], path: str) -> None:
        call_id = fields.req_str(item, "call_id", path, empty=False)
        name = fields.req_str(item, "name", path, empty=False)
        arguments = fields.req_str(item, "arguments", path)
        self._call_names[call_id] = name
        self._assistant().append({"type": "tool_call", "id": call_id, "name": name, "arguments": arguments})

    def _function_call_output(self, item: dict[str, Any], path: str) -> None:
        call_id = fields.req_str(item, "call_id", path, empty=False)
        output = item.get("output")
        text = output if isinstance(output, str) else _plain_text(output, f"{path}.output")
        name = fields.opt_str(item, "name", path) or self._call_names.get(call_id)
        result = {"type": "tool_result", "tool_call_id": call_id, "name": name, "content": text, "is_error": False}
        self.messages.append({"role": "tool", "content": [result]})

    def _reasoning(self, item: dict[str, Any], path: str) -> None:
        text = _summary_text(item, path)
        signature = fields.opt_str(item, "encrypted_content", path)
        self._assistant().append({"type": "thinking", "text": text, "signature": signature})

    def _item_reference(self, item: dict[str, Any], path: str) -> None:
        raise BadRequest("item_reference input items are not supported; send the item itself or use "
                         "previous_response_id", param=f"{path}.type")


def _messages(body: Mapping[str, Any], system: list[str]) -> list[dict[str, Any]]:
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": [{"type": "text", "text": value}]}]
    if not isinstance(value, list):
        raise BadRequest("'input' must be a string or an array of input items", param="input")
    decoder = _InputDecoder(system)
    for i, item in enumerate(value):
        decoder.item(item, f"input[{i}]")
    return decoder.messages


# --- tools and formats -------------------------------------------------------------------------


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise BadRequest("a tool must be an object", param=path)
        if tool.get("type") != "function":
            raise BadRequest(f"tool type {tool.get('type')!r} is not supported", param=f"{path}.type")
        fields.opt_bool(tool, "strict", path)
        out.append(
            {
                "name": fields.req_str(tool, "name", path, empty=False),
                "description": fields.opt_str(tool, "description", path),
                "parameters": fields.opt_obj(tool, "parameters", path),
            }
        )
    return out or None


def _tool_choice(body: Mapping[str, Any]) -> str | dict[str, Any] | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            raise BadRequest("tool_choice must be 'auto', 'none' or 'required'", param="tool_choice")
        return choice
    if not isinstance(choice, dict):
        raise BadRequest("tool_choice must be a string or an object", param="tool_choice")
    if choice.get("type") != "function":
        raise BadRequest(f"tool_choice type {choice.get('type')!r} is not supported", param="tool_choice.type")
    return {"name": fields.req_str(choice, "name", "tool_choice", empty=False)}


def _response_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    text = fields.opt_obj(body, "text")
    fmt = None if text is None else fields.opt_obj(text, "format", "text")
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind not in _FORMAT_TYPES:
        raise BadRequest("text.format.type must be 'text', 'json_object' or 'json_schema'", param="text.format.type")
    if kind != "json_schema":
        return {"type": kind, "schema": None, "name": None, "strict": None}
    schema = fields.opt_obj(fmt, "schema", "text.format")
    if schema is None:
        raise BadRequest("'text.format.schema' is required for json_schema", param="text.format.schema")
    return {
        "type": "json_schema",
        "schema": schema,
        "name": fields.req_str(fmt, "name", "text.format", empty=False),
        "strict": fields.opt_bool(fmt, "strict", "text.format"),
    }


def _reasoning(body: Mapping[str, Any]) -> dict[str, Any] | None:
    reasoning = fields.opt_obj(body, "reasoning")
    if reasoning is None:
        return None
    fields.opt_str(reasoning, "summary", "reasoning")
    effort = fields.opt_str(reasoning, "effort", "reasoning")
    return None if effort is None else {"effort": effort, "budget": None}


# --- public interface --------------------------------------------------------------------------


def decode_request(body: Any, params: Mapping[str, Any] | None = None) -> CanonicalRequest:
    """A Responses API request body -> :class:`CanonicalRequest` (raises only BadRequest)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = fields.req_str(body, "model", empty=False)
    previous = fields.opt_str(body, "previous_response_id")
    fields.opt_bool(body, "store")
    system: list[str] = []
    instructions = fields.opt_str(body, "instructions")
    if instructions:
        system.append(instructions)
    messages = _messages(body, system)
    if not messages and previous is None:
        raise BadRequest("'input' must contain at least one message", param="input")
    return CanonicalRequest(
        model=model,
        messages=messages,
        system="\n\n".join(system) if system else None,
        tools=_tools(body),
        tool_choice=_tool_choice(body),
        max_tokens=fields.opt_int(body, "max_output_tokens", minimum=1),
        temperature=fields.opt_number(body, "temperature"),
        top_p=fields.opt_number(body, "top_p"),
        response_format=_response_format(body),
        reasoning=_reasoning(body),
        stream=bool(fields.opt_bool(body, "stream")),
        include_usage=True,
        parallel_tool_calls=fields.opt_bool(body, "parallel_tool_calls"),
        user=fields.opt_str(body, "user"),
        metadata=fields.opt_obj(body, "metadata"),
        raw=body,
        inbound=NAME,
    )


def encode_response(events: list[Event], ctx: ResponseContext) -> dict[str, Any]:
    """The non-stream Response object."""
    agg = aggregate(events)
    choice = next((c for c in agg.choices if c.index == 0), Choice())  # one candidate only
    status, details = finish_status(choice.finish_reason)
    error = None
    if agg.error is not None:
        status, details, error = "failed", None, error_object(agg.error)
    return response_object(ctx, status=status, output=output_items(ctx.id, choice, status),
                           usage=usage_object(agg.usage), incomplete_details=details, error=error)


def error_body(err: GatewayError) -> dict[str, Any]:
    """The OpenAI error JSON for a gateway error."""
    etype = _ERROR_TYPES.get(err.kind, "server_error")
    return {"error": {"message": err.message, "type": etype, "param": err.param, "code": err.code}}


# --- server-side state: the engine calls these hooks with the gateway's stores ---------------------


def _stored_id(owner: str | None, response_id: str) -> str:
    """Conversations are kept per API key: another key cannot continue (or read) them."""
    return f"{owner or ''}\x00{response_id}"


def prepare(stores: Stores, request: CanonicalRequest, owner: str | None = None) -> CanonicalRequest:
    """Continue a stored conversation when ``previous_response_id`` is set (404 when unknown)."""
    previous = request.raw.get("previous_response_id")
    if not previous:
        return request
    store = stores.responses
    stored = store.get(_stored_id(owner, str(previous))) if store is not None else None
    if stored is None:
        why = (" The gateway's shared state store is unreachable, so responses stored through other gateway "
               "instances cannot be read now; retry later or send the whole conversation."
               if store is not None and store.unavailable else "")
        raise GatewayError("not_found", f"Previous response with id '{previous}' not found.{why}",
                           param="previous_response_id", code="previous_response_not_found")
    return apply_previous(request, stored)


async def fetch(stores: Stores, request: CanonicalRequest, owner: str | None = None) -> None:
    """Bring in the stored conversation ``previous_response_id`` names when another gateway stored it."""
    previous = request.raw.get("previous_response_id")
    if previous and stores.responses is not None:
        await stores.responses.fetch(_stored_id(owner, str(previous)))


def remember(stores: Stores, request: CanonicalRequest, ctx: ResponseContext,
             events: list[Event], owner: str | None = None) -> Awaitable[Any] | None:
    """Keep the finished exchange for a later ``previous_response_id`` unless ``store`` is false (the
    shared store's write, when there is one, for the engine to await)."""
    store = stores.responses
    if store is not None and request.raw.get("store", True) is not False:
        return store.put(_stored_id(owner, ctx.id), request.system, conversation_after(request, events))
    return None


CODEC = ClientCodec(NAME, FAMILY, decode_request, encode_response, StreamEncoder, id_prefix="resp_",
                    prepare=prepare, fetch=fetch, remember=remember)
