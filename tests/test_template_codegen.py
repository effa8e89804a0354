"""The generated-function template compiler: same results as Jinja, and template text never becomes code."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from jinja2.runtime import Undefined

from router import template_codegen
from router.canonical import CanonicalRequest
from router.registry import template_filters
from router.templates import PRUNE, compile_tree, make_environment, render_tree

ENV = make_environment(template_filters())
REQ = CanonicalRequest(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                       system="sys", temperature=0.5, stop=["x"], raw={"model": "m"})
CTX: dict[str, Any] = {"request": REQ, "model": "gemini-2.5-flash", "stream": True,
                       "provider": {"name": "p", "base_url": "http://h"}, "account": {"api_key": "k"}}


def reference(node: Any) -> Any:
    """Render with plain Jinja, leaf by leaf (the behaviour the compiler must keep)."""
    if isinstance(node, dict):
        out = {k: reference(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not PRUNE}
    if isinstance(node, list):
        return [v for v in (reference(x) for x in node) if v is not PRUNE]
    if isinstance(node, str) and "{{" in node:
        stripped = node.strip()
        if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
            v = ENV.compile_expression(stripped[2:-2], undefined_to_none=True)(**CTX)
            return PRUNE if v is None or isinstance(v, Undefined) else v
        return ENV.from_string(node).render(CTX)
    return node


TREES = {
    "gemini-like": {"contents": "{{ request.messages | gemini_contents }}",
                    "systemInstruction": "{{ request.system | gemini_system }}",
                    "generationConfig": {"temperature": "{{ request.temperature }}", "topK": "{{ request.top_k }}",
                                         "stopSequences": "{{ request.stop | gemini_stop }}"}},
    "text-and-cond": {"url": "{{ provider.base_url }}/v1/{{ model | path_segment }}:{{ 'a' if stream else 'b' }}",
                      "alt": "{{ 'sse' if stream else none }}", "auth": "Bearer {{ account.api_key }}"},
    "lists-and-literals": {"l": ["{{ request.top_p }}", "x", 3, None, "{{ model }}"], "n": None, "f": False},
    "jinja-fallback": {"upper": "{{ model | upper }}", "dflt": "{{ nothing | default('d') }}",
                       "loop": "{% for m in request.stop %}[{{ m }}]{% endfor %}"},
}


@pytest.mark.parametrize("name", list(TREES))
def test_same_result_as_jinja(name: str) -> None:
    assert render_tree(compile_tree(ENV, TREES[name]), CTX) == reference(TREES[name])


@pytest.mark.parametrize("evil", [
    "'] = 1\nimport os\nx['", "\\\"; raise SystemExit #", "{{ '__import__(\"os\")' }}", "\n\n}}{{", "a'b\"c",
])
def test_template_text_never_becomes_code(evil: str) -> None:
    tree = {evil: "literal " + evil.replace("{", "(").replace("}", ")"),
            "k": "{{ '" + evil.replace("'", "").replace("{", "").replace("}", "") + "' }}",
            "lst": [evil.replace("{", "(")]}
    out = render_tree(compile_tree(ENV, tree), CTX)
    assert out[evil] == "literal " + evil.replace("{", "(").replace("}", ")")
    assert out["lst"] == [evil.replace("{", "(")]
    assert isinstance(out["k"], str)


def test_sandbox_still_guards_attribute_access() -> None:
    """Unsafe attributes come out undefined (so the leaf is pruned), never the Python object."""

    class Thing:
        def method(self) -> None: ...

    node = compile_tree(ENV, {"x": "{{ thing.method.__func__ }}", "y": "{{ type.mro }}",
                              "z": "{{ thing.method.__globals__ }}", "t": "x{{ thing.method.__func__ }}"})
    out = render_tree(node, {**CTX, "thing": Thing(), "type": type})
    assert out == {"t": "x"}


@pytest.mark.parametrize(("tree", "names", "pure"), [
    ({"X-Mapped-Model": "{{ upstream_model }}", "X-Account-Email": "{{ account.email }}"},
     {"upstream_model", "account"}, True),
    ({"X-A": "{{ provider.name }}-{{ client_model if client_model else 'none' }}"}, {"provider", "client_model"}, True),
    ({"X-A": "{{ upstream_model | path_segment }}"}, {"upstream_model"}, False),  # a filter: not known to be pure
    ({"X-A": "{{ upstream_model | upper }}"}, set(), False),  # not a fast filter: a Jinja fallback leaf
    ({"X-A": "{% for i in [1] %}{{ i }}{% endfor %}"}, set(), False),  # a Jinja fallback leaf
    ({"X-A": "fixed"}, set(), True),
])
def test_templates_know_what_they_read(tree: Any, names: set[str], pure: bool) -> None:
    node = compile_tree(ENV, tree, "t")
    assert node.names == names and node.pure is pure



def test_the_generator_does_not_import_the_templates_module() -> None:
    """Dependencies point one way: templates -> template_codegen -> template_sandbox; not even an
    import inside a function goes back (no cycle dodged by a lazy import)."""
    tree = ast.parse(Path(template_codegen.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "router.templates" not in imported and "router.template_codegen" not in imported


def test_the_gateways_filters_are_declared_to_the_environment() -> None:
    """The filters the generated code calls directly are the environment's ``own_filters``, given to it
    when it is built (BASE_FILTERS and the configured ones), never Jinja's budget-wrapped ones."""

    def shout(value: Any) -> str:
        return str(value).upper()

    env = make_environment({"shout": shout})
    assert {"shout", "bearer", "path_segment"} <= env.own_filters and "upper" not in env.own_filters
    assert env.filters["shout"] is shout
    node = compile_tree(env, {"a": "{{ model | shout }}", "b": "{{ model | upper }}"})
    assert node.jinja and render_tree(node, CTX) == {"a": "GEMINI-2.5-FLASH", "b": "GEMINI-2.5-FLASH"}
    assert not compile_tree(env, {"a": "{{ model | shout }}"}).jinja
