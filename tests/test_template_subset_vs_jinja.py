"""One meaning for a template: every construct of the generated fast path renders as Jinja renders it.

Each expression of the table is rendered through the generated subset and forced through Jinja (the
same leaf compiled with ``jinja_leaf``, and the lookup wrapped in a Jinja-only construct: a Jinja
filter, the ``~`` operator), as a lone ``{{ }}`` leaf and inside text; the results, or the error
classes, must be the same. Covers dict keys that shadow dict methods, missing names, lookups on
missing names and on none, list and string indexes, the canonical request, the client's headers,
the gateway's filters given missing values, and the operators of the subset.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from router.canonical import CanonicalRequest
from router.exchange import ClientHeaders
from router.registry import template_filters
from router.template_codegen import jinja_leaf
from router.templates import PRUNE, compile_tree, make_environment, render_tree

ENV = make_environment(template_filters())
REQ = CanonicalRequest(model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                       system="sys", stop=["x"], raw={"model": "m", "k": {"v": 1}, "items": [3]})
CTX: dict[str, Any] = {
    "body": {"items": [1, 2], "keys": "k", "get": 7, "copy": None, "a": None, "n": {"m": 1}, "0": "zero"},
    "lst": [10, {"x": 1}, None], "s": "ab", "nothing": None, "zero": 0, "stream": True, "model": "gemini/x",
    "request": REQ, "headers": ClientHeaders({"x-a": "1", "authorization": "Bearer secret"}),
}

EXPRESSIONS = [
    # a dict's keys that are also dict attributes: Jinja's ``d.name`` is the attribute, ``d['name']`` the item
    "body.items", "body.keys", "body.get", "body.copy", "body.values", "body.update", "body.pop",
    "body['items']", "body['keys']", "body['values']", "body['pop']", "body.items.x", "body['items'][1]",
    "request.raw.items", "request.raw['items']", "request.items",
    # missing names and lookups on them (an attribute or item of an undefined is undefined)
    "missing", "missing.y", "missing['y']", "missing[0]", "missing.y.z", "missing.items", "missing['keys']",
    "request.raw.a.b",
    # none values and lookups on them
    "nothing", "body.a", "body.a.b", "nothing.x", "nothing[0]", "nothing.items", "body.copy.x",
    # other lookups: nested dicts, list and string indexes, attributes of lists and strings
    "body.n.m", "body.n.zz", "body['0']", "body[0]", "lst[0]", "lst[1].x", "lst[2]", "lst[9]", "lst.x",
    "lst.count", "lst['count']", "s[0]", "s.upper", "s['upper']", "s.format", "zero.real", "zero.x",
    # the canonical request and the client's headers
    "request.messages", "request.top_k", "request['model']", "request.raw.k.v", "request.nope",
    "headers['x-a']", "headers['authorization']", "headers['get']", "headers.get", "headers.nope",
    # the gateway's filters, given missing, none and odd values
    "missing | path_segment", "missing.y | tojson", "body.a | tojson", "nothing | bearer", "s | bearer",
    "model | path_segment", "body.items | tojson", "body['items'] | tojson", "missing | gemini_system",
    "request.messages | openai_messages(missing.y)", "request.raw | with_model(missing)",
    "missing | anthropic_max_tokens", "body | without('items', 'keys')",
    # the subset's operators and constants
    "zero or 'd'", "missing or 'd'", "missing.y or body.a", "missing and 1", "stream and body.items",
    "not missing.y", "not body.keys", "'a' if missing.y else 'b'", "'a' if body.items else 'b'",
    "'a' if zero", "body.items if stream", "none", "42", "'text'", "true",
]

# Jinja-only constructs that leave a value as it is: the leaf then renders through Jinja itself
LONE_WRAPPERS = ["{{{{ ({}) | default(none) }}}}", "{{{{ [{}] | first }}}}"]
TEXT_WRAPPERS = ["<{{{{ ({}) ~ '' }}}}>", "<{{{{ [{}] | join }}}}>"]


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def outcome(render: Any) -> Any:
    """What a render gives, comparable between the two paths: the value (none and undefined as
    PRUNE, a function by its name and owner), or the class of the error it raised."""
    try:
        value = render()
    except Exception as e:  # noqa: BLE001 - the error class is the outcome compared
        return ("error", type(e).__name__)
    if value is None or type(value).__name__.endswith("Undefined"):
        return PRUNE
    if callable(value):
        return ("callable", getattr(value, "__name__", None), type(getattr(value, "__self__", None)).__name__)
    return _ADDRESS.sub(" at 0x…", value) if isinstance(value, str) else value  # '<function str.format at 0x…>'


def subset(text: str) -> Any:
    tree = compile_tree(ENV, {"v": text})
    assert not tree.jinja, f"{text} should take the fast path"
    return outcome(lambda: render_tree(tree, CTX).get("v"))


def jinja(text: str) -> Any:
    leaf = jinja_leaf(ENV, text)
    return outcome(lambda: leaf(CTX))


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_a_lone_expression_means_what_it_means_in_jinja(expr: str) -> None:
    text = "{{ " + expr + " }}"
    expected = jinja(text)
    assert subset(text) == expected
    for wrapper in LONE_WRAPPERS:  # wrapping in a Jinja-only filter changes nothing
        assert jinja(wrapper.format(expr)) == expected, wrapper


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_an_expression_in_text_means_what_it_means_in_jinja(expr: str) -> None:
    text = "<{{ " + expr + " }}>"
    expected = jinja(text)
    assert subset(text) == expected
    for wrapper in TEXT_WRAPPERS:
        assert jinja(wrapper.format(expr)) == expected, wrapper


def test_the_reviewers_cases() -> None:
    """A dict key named like a dict method is the method in Jinja, so on the fast path too; a lookup
    on a missing name is pruned in both."""
    assert subset("{{ body.items }}") == ("callable", "items", "dict")
    assert jinja("{{ body.items | list }}") == subset("{{ body.items | tojson }}") == ("error", "TypeError")
    assert subset("{{ body['items'] }}") == jinja("{{ body['items'] | list }}") == [1, 2]
    assert subset("{{ missing.y }}") == jinja("{{ missing.y | default(none) }}") == PRUNE
    # a name of Jinja's globals, or ``self`` (the template), is Jinja's: such a leaf is not in the subset
    for name in ("range", "dict", "lipsum", "cycler", "joiner", "namespace", "self"):
        assert compile_tree(ENV, {"v": "{{ " + name + " }}"}).jinja
        assert compile_tree(ENV, {"v": "{{ " + name + ".x | path_segment }}"}).jinja
    assert jinja("{{ dict }}") == ("callable", "dict", "NoneType")
    # any other use of an undefined is an error, a lookup on it first or not (README, templates)
    assert jinja("{{ missing.y + 1 }}") == jinja("{{ missing + 1 }}") == ("error", "UndefinedError")


def test_the_shipped_templates_read_dicts_directly() -> None:
    """No lookup of a shipped template needs Jinja's getattr: their generated code reads dicts and
    the canonical request directly (the fast path the ~3% are measured for)."""
    from pathlib import Path

    from router.snapshot import build

    snap, _ = build(Path(__file__).resolve().parent.parent / "router" / "routes.d", 1, template_filters())
    templates = [t for p in snap.providers.values() for t in (p.template, *p.inbound_templates.values())]
    trees = [tree for t in templates for tree in (t.url, t.query, t.headers, t.body) if tree is not None]
    trees.append(snap.response_headers)
    assert templates and all(not tree.jinja for tree in trees)
    assert not [n for tree in trees for n in tree.render.__code__.co_names if n in ("_jattr", "_jitem")]
