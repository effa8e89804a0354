"""The gateway's one token estimate: a request's input tokens, the same whichever API asks.

The count-tokens endpoints (Anthropic's ``/v1/messages/count_tokens``, Gemini's ``:countTokens``)
answer with it in their own body; it is an estimate for budgeting, not any upstream's count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from router import speedups
from router.canonical import CanonicalRequest

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
SYSTEM_OVERHEAD_TOKENS = 3
IMAGE_TOKENS = 1500


def python_estimate_tokens(req: CanonicalRequest) -> int:
    """A deterministic, provider-independent estimate of a request's input tokens.

    ``ceil(chars / 4) + 4 * messages + 3 (if a system prompt) + 1500 * images``, where ``chars``
    counts the characters of the system prompt, every text and thinking part, every tool call's
    name and arguments, every tool result's content, and each tool definition serialised as
    compact JSON. Never less than 1.
    """
    chars = len(req.system or "")
    images = 0
    for message in req.messages:
        content = message.get("content")
        if isinstance(content, str):  # the usual message: one text (no part to build; every request of a tpm limit)
            chars += len(content)
            continue
        for part in content or ():
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "text":  # _part_chars inlined for the usual part
                    chars += len(part.get("text") or "")
                else:
                    chars += _part_chars(part)
                    images += kind == "image"
    for tool in req.tools or ():
        chars += len(orjson.dumps(tool).decode())
    total = (-(-chars // CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(req.messages)  # ceil, in integers
             + IMAGE_TOKENS * images + (SYSTEM_OVERHEAD_TOKENS if req.system else 0))
    return total if total > 1 else 1


_COMPILED = speedups.compiled()  # router/_speedups.c: the plain-text request (most) compiled, the rest here
estimate_tokens: Callable[[CanonicalRequest], int] = (_COMPILED.estimate_tokens if _COMPILED
                                                      else python_estimate_tokens)


def _part_chars(part: dict[str, Any]) -> int:
    kind = part.get("type")
    if kind == "tool_call":
        return len(part.get("name") or "") + len(part.get("arguments") or "")
    if kind == "tool_result":
        return len(part.get("content") or "")
    if kind in ("text", "thinking"):
        return len(part.get("text") or "")
    return 0
