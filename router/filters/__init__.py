"""Template filters: the heavy canonical → upstream conversions, one module per upstream dialect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def all_filters() -> dict[str, Callable[..., Any]]:
    """Every conversion filter, by name, for the template environment."""
    from router.filters import anthropic, gemini, openai

    out: dict[str, Callable[..., Any]] = {}
    for module in (gemini, openai, anthropic):
        out.update(module.FILTERS)
    return out
