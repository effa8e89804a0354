"""router.templates: native lone expressions, mixed text, pruning, the sandbox, path_segment."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import TemplateSyntaxError
from jinja2.exceptions import SecurityError

from router.registry import template_filters
from router.templates import (
    PRUNE,
    compile_tree,
    make_environment,
    render_tree,
    template_errors,
)

ENV = make_environment(template_filters())
CTX: dict[str, Any] = {
    "request": {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "max_tokens": 10,
                "stream": False, "metadata": {"a": 1}, "n": None, "stop": ["x"]},
    "model": "gemini-2.5-flash", "stream": True, "provider": {"base_url": "http://up"},
}


def render(tree: Any, ctx: dict[str, Any] | None = None) -> Any:
    return render_tree(compile_tree(ENV, tree), CTX if ctx is None else ctx)


@pytest.mark.parametrize(("leaf", "value"), [
    ("{{ request.messages }}", [{"role": "user", "content": "hi"}]),
    ("{{ request.metadata }}", {"a": 1}),
    ("{{ request.max_tokens }}", 10),
    ("{{ request.temperature }}", 0.5),
    ("{{ stream }}", True),
    ("{{ request.stream }}", False),
    ("  {{ model }}  ", "gemini-2.5-flash"),
    ("{{ request.max_tokens * 2 }}", 20),
    ("{{ [1, 'a'] }}", [1, "a"]),
    ("{{ 0 }}", 0),
    ("{{ '' }}", ""),
], ids=["list", "dict", "int", "float", "true", "false", "padded", "arith", "literal-list", "zero", "empty-str"])
def test_lone_expression_keeps_native_type(leaf: str, value: Any) -> None:
    out = render({"v": leaf})
    assert out == {"v": value} and type(out["v"]) is type(value)


@pytest.mark.parametrize(("leaf", "text"), [
    ("{{ provider.base_url }}/v1/{{ model }}", "http://up/v1/gemini-2.5-flash"),
    ("n={{ request.max_tokens }}", "n=10"),
    ("{{ request.max_tokens }}{{ request.max_tokens }}", "1010"),
    ("{% if stream %}sse{% endif %}", "sse"),
    ("plain text", "plain text"),
    ("{# comment #}x", "x"),
    ("{{ missing }}-{{ model }}", "-gemini-2.5-flash"),
], ids=["url", "prefix", "two-exprs", "statement", "constant", "comment", "undefined-in-text"])
def test_mixed_text_renders_a_string(leaf: str, text: str) -> None:
    assert render({"v": leaf}) == {"v": text}


def test_none_and_undefined_leaves_are_pruned() -> None:
    tree = {
        "keep": "{{ request.max_tokens }}",
        "none": "{{ request.n }}",
        "undefined": "{{ request.top_k }}",
        "missing_var": "{{ nothing }}",
        "literal_none": "{{ none }}",
        "cond": "{{ 'sse' if not stream else none }}",
        "nested": {"a": "{{ request.top_p }}", "b": 1, "c": None},
        "list": ["{{ request.top_p }}", "x", "{{ model }}", "{{ none }}"],
        "const_false": False,
    }
    assert render(tree) == {
        "keep": 10, "nested": {"b": 1, "c": None}, "list": ["x", "gemini-2.5-flash"], "const_false": False,
    }


def test_lone_none_body_renders_prune() -> None:
    assert render("{{ request.n }}") is PRUNE
    assert render([]) == [] and render({}) == {}


def test_filters_are_available() -> None:
    assert render({"v": "{{ request.metadata | tojson }}"}) == {"v": '{"a":1}'}
    assert render({"v": "{{ request | with_model('m2') }}"})["v"]["model"] == "m2"
    assert "stream" not in render({"v": "{{ request | without('stream') }}"})["v"]
    assert render({"v": "{{ request.messages | gemini_contents }}"})["v"] == [
        {"role": "user", "parts": [{"text": "hi"}]}]


def test_client_text_cannot_break_out_of_a_json_string() -> None:
    evil = '"}, "admin": true, "x": {"'
    out = render({"content": "{{ text }}", "mixed": "say: {{ text }}"}, {"text": evil})
    assert out == {"content": evil, "mixed": "say: " + evil}


@pytest.mark.parametrize("leaf", [
    "{{ ''.__class__.__mro__ }}",
    "x {{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
    "{{ request.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ request.update({'x': 1}) }}",
    "{{ request.messages.append(1) }}",
    "{{ model.format.__globals__ }}",
], ids=["mro", "subclasses-mixed", "int-subclasses", "dunder-class", "cycler-globals", "lipsum-globals",
        "dict-mutation", "list-mutation", "str-format"])
def test_sandbox_blocks_python_internals(leaf: str) -> None:
    ctx = {**CTX, "request": {"messages": [], "temperature": 1}}
    try:
        out = render({"v": leaf}, ctx)
    except SecurityError:
        return
    text = repr(out)
    for leak in ("class", "object", "module", "function", "built-in", "subclasses", "globals", "<"):
        assert leak not in text, text
    assert ctx["request"] == {"messages": [], "temperature": 1}  # nothing mutated


@pytest.mark.parametrize(("model", "segment"), [
    ("gemini-2.5-flash", "gemini-2.5-flash"),
    ("a/b", "a%2Fb"),
    ("x?y", "x%3Fy"),
    ("x#y", "x%23y"),
    ("a%2Fb", "a%252Fb"),
    ("..", "%2E%2E"),
    (".", "%2E"),
    ("../x", "..%2Fx"),
    ("a b", "a%20b"),
    ("models/gemini:pro", "models%2Fgemini%3Apro"),
], ids=["plain", "slash", "query", "fragment", "percent", "dotdot", "dot", "dotdot-slash", "space", "colon"])
def test_path_segment_encodes(model: str, segment: str) -> None:
    for name in ("path_segment", "urlencode"):
        assert render({"v": f"{{{{ model | {name} }}}}"}, {"model": model}) == {"v": segment}
        assert "/" not in segment and "?" not in segment and "#" not in segment


@pytest.mark.parametrize(("tree", "pointer", "message"), [
    ({"url": "{{ x", "body": {}}, ("t", "url"), "template syntax error"),
    ({"url": "u", "body": {"a": ["ok", "{% if %}"]}}, ("t", "body", "a", 1), "template syntax error"),
    ({"url": "{{ x | nope }}", "body": {}}, ("t", "url"), "No filter named 'nope'"),
], ids=["unclosed", "in-list", "unknown-filter"])
def test_template_errors_are_pointed(tree: Any, pointer: tuple[Any, ...], message: str) -> None:
    errs = list(template_errors(ENV, tree, ("t",)))
    assert len(errs) == 1 and errs[0][0] == pointer and message in errs[0][1]
    with pytest.raises(TemplateSyntaxError):
        compile_tree(ENV, tree)
