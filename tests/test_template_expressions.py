"""Expressions on the generated fast path must agree with Jinja, one by one."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2.runtime import Undefined

from router.canonical import CanonicalRequest
from router.registry import template_filters
from router.template_codegen import subset_expression
from router.templates import compile_tree, make_environment, render_tree

ENV = make_environment(template_filters())
REQ = CanonicalRequest(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                       system="sys", temperature=0.5, stop=["x"], raw={"model": "m", "k": {"v": 1}})
CTX: dict[str, Any] = {"request": REQ, "model": "gemini-2.5-flash", "stream": True,
                       "provider": {"name": "p", "base_url": "http://h"}, "account": {"api_key": "k"},
                       "nothing": None}

EXPRESSIONS = [
    "model", "request.temperature", "request.top_p", "request.raw.k.v", "request.raw['k']", "missing",
    "nothing.attr", "request.messages[0]", "'sse' if stream else none", "'a' if missing else 'b'",
    "request.messages | gemini_contents", "request.system | gemini_system", "request.stop | gemini_stop",
    "request.messages | openai_messages(request.system)", "request | anthropic_max_tokens",
    "request.raw | with_model(model)", "stream and model", "missing or 'dflt'", "not stream", "42", "true",
    "model | path_segment", "request.tools | gemini_tools",
]


def jinja_value(expr: str) -> Any:
    v = ENV.compile_expression(expr, undefined_to_none=True)(**CTX)
    return None if isinstance(v, Undefined) else v


def fast(expr: str) -> str | None:
    """The generated source for ``expr``, or None when it is outside the fast subset."""
    return subset_expression(ENV, expr)


def rendered(template: str) -> Any:
    out = render_tree(compile_tree(ENV, {"v": template}), CTX)
    return out.get("v")


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_fast_expression_agrees_with_jinja(expr: str) -> None:
    assert fast(expr) is not None, f"{expr} should take the fast path"
    assert rendered("{{ " + expr + " }}") == jinja_value(expr)


@pytest.mark.parametrize("text", [
    "{{ provider.base_url }}/v1beta/models/{{ model | path_segment }}:"
    "{{ 'streamGenerateContent' if stream else 'generateContent' }}",
    "Bearer {{ account.api_key }}", "{{ missing }}x{{ nothing }}", "plain {{ request.temperature }} text",
])
def test_fast_text_agrees_with_jinja(text: str) -> None:
    assert rendered(text) == ENV.from_string(text).render(CTX)


@pytest.mark.parametrize("expr", [
    "request.__class__", "''.__class__.__mro__", "range(3)", "x ~ y", "missing | default('x')",
    "request.raw | default('x')", "cycler.__init__",
])
def test_outside_the_subset_falls_back(expr: str) -> None:
    assert fast(expr) is None


def test_missing_attribute_of_missing_is_none_not_an_error() -> None:
    """An attribute of an undefined is undefined, on the fast path and in Jinja (the environment's
    undefined is chainable): the leaf is pruned."""
    assert fast("missing.deeper") is not None and rendered("{{ missing.deeper }}") is None
    assert jinja_value("missing.deeper") is None and rendered("{{ missing.deeper | default(none) }}") is None
