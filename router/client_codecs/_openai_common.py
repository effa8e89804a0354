"""What OpenAI Chat Completions and legacy Completions requests share: the body, the model, and the
sampling and stream fields (read with :data:`router.client_codecs._fields.OPENAI_CHAT`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.client_codecs._fields import OPENAI_CHAT as fields
from router.errors import BadRequest


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", param=None)
    return body


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    return model


def _stop(body: Mapping[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop or None
    raise BadRequest("'stop' must be a string or an array of strings", param="stop")


def common_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling/stream fields chat and legacy completions share, as CanonicalRequest kwargs."""
    # A reader runs only for a field that is present (most requests carry two or three of these).
    options = (fields.opt_obj(body, "stream_options") or {}) if "stream_options" in body else {}
    return {
        "temperature": fields.opt_number(body, "temperature", low=0.0, high=2.0) if "temperature" in body else None,
        "top_p": fields.opt_number(body, "top_p", low=0.0, high=1.0) if "top_p" in body else None,
        "stop": _stop(body) if "stop" in body else None,
        "n": fields.opt_int(body, "n", minimum=1) if "n" in body else None,
        "seed": fields.opt_int(body, "seed") if "seed" in body else None,
        "user": fields.opt_str(body, "user") if "user" in body else None,
        "metadata": fields.opt_obj(body, "metadata") if "metadata" in body else None,
        "stream": bool(fields.opt_bool(body, "stream")) if "stream" in body else False,
        "include_usage": bool(fields.opt_bool(options, "include_usage", "stream_options")) if options else False,
    }
