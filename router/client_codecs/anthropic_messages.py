"""The Anthropic Messages client codec: ``POST /v1/messages``, ``/v1/messages/count_tokens``, models.

Request decoding maps the body onto :class:`router.canonical.CanonicalRequest` (content blocks are
handled in :mod:`router.client_codecs._anthropic_blocks`); responses are encoded in
:mod:`router.client_codecs._anthropic_encode` and re-exported here, so the engine sees the one module
interface described in :mod:`router.client_codecs`.

Decisions beyond the obvious field renames:

* Server tools and Anthropic-defined tools (any tool with a ``type`` other than ``custom``, e.g.
  ``web_search_20250305``, ``bash_20250124``) are ignored: no other upstream can run them.
* ``tool_choice.disable_parallel_tool_use: true`` → ``parallel_tool_calls=False`` (else None).
* ``thinking {type: enabled, budget_tokens}`` → ``reasoning {"effort": None, "budget": n}``;
  ``{type: disabled}`` → None; ``adaptive``/``between_tools`` → ``{"effort": <output_config.effort
  or "medium">, "budget": None}``; ``output_config.effort`` alone → ``{"effort": e, "budget": None}``.
* ``output_config.format {type: json_schema, schema}`` → ``response_format`` json_schema.
* ``metadata.user_id`` → ``user`` (canonical ``metadata`` stays None: it means OpenAI metadata).
* ``include_usage`` is True: Anthropic streams always report usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.canonical import CanonicalRequest
from router.client_codecs._anthropic_blocks import decode_messages, decode_system
from router.client_codecs._anthropic_encode import (
    ERROR_TYPES,
    StreamEncoder,
    encode_response,
    error_body,
)
from router.client_codecs._fields import ANTHROPIC as fields
from router.client_codecs._fields import type_name
from router.codecs import ClientCodec, Family
from router.errors import BadRequest
from router.limit_headers import anthropic_headers
from router.token_estimate import estimate_tokens

__all__ = [
    "ERROR_TYPES",
    "NAME",
    "StreamEncoder",
    "count_tokens_body",
    "decode_count_tokens_request",
    "decode_request",
    "encode_response",
    "error_body",
    "model_info",
    "models_list",
]

NAME = "anthropic.messages"

MODEL_CREATED_AT = "2025-01-01T00:00:00Z"


def decode_request(body: Any, params: Mapping[str, Any] | None = None) -> CanonicalRequest:
    """A ``POST /v1/messages`` body → canonical request; BadRequest names the bad field."""
    return _decode(body, max_tokens_required=True)


def decode_count_tokens_request(body: Any, params: Mapping[str, Any] | None = None
                                ) -> CanonicalRequest:
    """A ``POST /v1/messages/count_tokens`` body: as :func:`decode_request`, max_tokens optional."""
    return _decode(body, max_tokens_required=False)


def _decode(body: Any, *, max_tokens_required: bool) -> CanonicalRequest:
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type_name(body)}")
    model = fields.req_str(body, "model")
    if not model:
        raise BadRequest("model: must not be empty", param="model")
    max_tokens = fields.opt_int(body, "max_tokens", required=max_tokens_required, minimum=1)
    items = fields.req_list(body, "messages")
    tool_choice, parallel = _tool_choice(body)
    return CanonicalRequest(
        model=model,
        messages=decode_messages(items),
        system=decode_system(body),
        tools=_tools(body),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=max_tokens,
        temperature=fields.opt_number(body, "temperature"),
        top_p=fields.opt_number(body, "top_p"),
        top_k=fields.opt_int(body, "top_k", minimum=0),
        stop=fields.str_list(body, "stop_sequences") or None,
        reasoning=_reasoning(body),
        response_format=_response_format(body),
        stream=bool(fields.opt_bool(body, "stream")),
        include_usage=True,
        user=_user(body),
        raw=body,
        inbound=NAME,
    )


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    items = fields.opt_list(body, "tools")
    if items is None:
        return None
    tools: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        path = f"tools.{i}"
        tool = fields.obj(raw, path)
        if fields.opt_str(tool, "type", path) not in (None, "custom"):
            continue  # server / Anthropic-defined tool: ignored (module docstring)
        tools.append({
            "name": fields.req_str(tool, "name", path),
            "description": fields.opt_str(tool, "description", path),
            "parameters": fields.req_obj(tool, "input_schema", path),
        })
    return tools or None


def _tool_choice(body: dict[str, Any]) -> tuple[str | dict[str, Any] | None, bool | None]:
    choice = fields.opt_obj(body, "tool_choice")
    if choice is None:
        return None, None
    kind = fields.req_str(choice, "type", "tool_choice")
    disable = fields.opt_bool(choice, "disable_parallel_tool_use", "tool_choice")
    parallel = False if disable else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        return {"name": fields.req_str(choice, "name", "tool_choice")}, parallel
    raise BadRequest(f"tool_choice.type: must be auto, any, none or tool, got {kind!r}",
                     param="tool_choice.type")


def _output_config(body: dict[str, Any]) -> dict[str, Any]:
    return fields.opt_obj(body, "output_config") or {}


def _reasoning(body: dict[str, Any]) -> dict[str, Any] | None:
    effort = fields.opt_str(_output_config(body), "effort", "output_config")
    thinking = fields.opt_obj(body, "thinking")
    if thinking is None:
        return {"effort": effort, "budget": None} if effort else None
    kind = fields.req_str(thinking, "type", "thinking")
    if kind == "disabled":
        return None
    if kind == "enabled":
        budget = fields.opt_int(thinking, "budget_tokens", "thinking", required=True, minimum=1)
        return {"effort": effort, "budget": budget}
    if kind in ("adaptive", "between_tools"):
        return {"effort": effort or "medium", "budget": None}
    raise BadRequest(f"thinking.type: must be enabled, disabled or adaptive, got {kind!r}",
                     param="thinking.type")


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = fields.opt_obj(_output_config(body), "format", "output_config")
    if fmt is None:
        return None
    kind = fields.req_str(fmt, "type", "output_config.format")
    if kind != "json_schema":
        raise BadRequest(f"output_config.format.type: must be json_schema, got {kind!r}",
                         param="output_config.format.type")
    schema = fields.req_obj(fmt, "schema", "output_config.format")
    return {"type": "json_schema", "schema": schema, "name": None, "strict": None}


def _user(body: dict[str, Any]) -> str | None:
    metadata = fields.opt_obj(body, "metadata")
    return None if metadata is None else fields.opt_str(metadata, "user_id", "metadata")


# --- token counting --------------------------------------------------------------------------


def count_tokens_body(req: CanonicalRequest) -> dict[str, int]:
    """The ``/v1/messages/count_tokens`` response."""
    return {"input_tokens": estimate_tokens(req)}


# --- models ----------------------------------------------------------------------------------


def model_info(model_id: str, created_at: str = MODEL_CREATED_AT) -> dict[str, Any]:
    """One ``GET /v1/models/{id}`` object."""
    return {"type": "model", "id": model_id, "display_name": model_id,
            "created_at": created_at, "lifecycle": "active"}


def models_list(models: list[str], created_at: str = MODEL_CREATED_AT) -> dict[str, Any]:
    """The ``GET /v1/models`` page: every model, ``has_more`` false."""
    return {
        "data": [model_info(m, created_at) for m in models],
        "has_more": False,
        "first_id": models[0] if models else None,
        "last_id": models[-1] if models else None,
    }


# --- the family and the codec (router.registry lists them) ----------------------------------------


def _count_tokens(body: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    return count_tokens_body(decode_count_tokens_request(body, params))


FAMILY = Family("anthropic", error_body, lambda models: models_list([m.id for m in models]),
                lambda m: model_info(m.id), path_prefixes=("/v1/messages",),
                marker_headers=("anthropic-version",), key_header="x-api-key",
                ratelimit_headers=anthropic_headers)
CODEC = ClientCodec(NAME, FAMILY, decode_request, encode_response, StreamEncoder, id_prefix="msg_",
                    count_tokens=_count_tokens)
