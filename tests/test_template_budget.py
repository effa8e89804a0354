"""A config author cannot freeze the gateway: no compile-time evaluation, a render budget, redaction."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from router.registry import template_filters
from router.snapshot import build
from router.template_budget import TemplateLimitError, TemplateLimits
from router.templates import compile_tree, make_environment, render_tree, template_errors

ROOT = Path(__file__).resolve().parent.parent
ENV = make_environment(template_filters())

# Constant expressions too large to compute: config errors, found without computing them.
HUGE_CONSTANTS = [
    "{{ (9**(9**8)) > 1 }}", "{{ 9 ** 99999999 }}", "x{{ 1 if 2 ** 99999999 else 0 }}y",
    "{{ 'x' * 999999999 }}", "{{ [1, 2] * 10**9 }}", "{{ ('a' * 1000) * (1000 * 1000) }}",
    "{{ '%999999999s' % 1 }}", "{% if (9**(9**8)) %}x{% endif %}", "{% set x = 'ab' * 10**12 %}{{ x }}",
    "{{ [(9**9**9)**9**9] }}", "{{ -(9**(9**8)) }}",
]

# Amplifiers whose operands are not all constants (or that are calls): they compile quickly and are
# refused when rendered, before the value is built.
AMPLIFIERS = [
    "{{ 'x' * n }}", "{{ n ** n }}", "{{ 'x'|center(1000000000) }}", "{{ 'x'|indent(999999999, true) }}",
    "{{ '%999999999s'|format(1) }}", "{{ '%*s'|format(n, 1) }}", "{{ '{:>999999999}'.format(1) }}",
    "{{ '{0:{1}}'.format(1, 999999999) }}", "{{ '{x:.999999999f}'.format_map({'x': 1.5}) }}",
    "{{ 'x'.ljust(999999999) }}", "{{ 'x'.rjust(n) }}", "{{ 'x'.center(n) }}", "{{ 'x'.zfill(10**9) }}",
    "{{ '\t'.expandtabs(999999999) }}", "{{ 'ab'|replace('', 'x' * 3000000) }}",
    "{{ 'ab'.replace('', 'x' * 3000000) }}", "{{ ('x' * 1000000).join(['a'] * 100) }}",
    "{{ (['a'] * 100)|join('x' * 1000000) }}", "{{ 'abc'|wordwrap(1, wrapstring='y' * 1000000) }}",
    "{{ ('a' * 100).translate({97: 'x' * 1000000}) }}", "{{ (1).to_bytes(999999999, 'big') }}",
    "{{ [1, 2]|batch(999999999)|list }}", "{{ [1, 2]|slice(999999999)|list }}",
    "{{ range(10**18)|length }}", "{{ range(1000)|batch(1)|sum(start=[]) }}",
    "{{ lipsum(n=100000, max=100000) }}", "{{ n|string * n }}", "{{ (n ~ '') * n }}",
    "{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
    "{% set ns = namespace(x=3) %}{% for i in range(60) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) if j < 0 %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% for i in range(99999) %}{{ 'x' * 1000 }}{% endfor %}",
    "{{ range(99999)|map('string')|join('x' * 1000) }}",
]


@pytest.mark.parametrize("leaf", ["{{ 1" + "0" * 5000 + " }}", "x{{ a }} {{ 1" + "0" * 5000 + " }}",
                                  "{% if 1" + "0" * 5000 + " %}{% endif %}"], ids=["lone", "text", "statement"])
def test_a_number_literal_python_cannot_read_is_a_config_error_not_a_traceback(leaf: str) -> None:
    errors = list(template_errors(ENV, {"v": leaf}, ("templates", "t")))
    assert len(errors) == 1 and "number literal too long" in errors[0][1]


def compile_seconds(leaf: str) -> tuple[float, list[tuple[Any, str]]]:
    t0 = time.monotonic()
    errors = list(template_errors(ENV, {"v": leaf}, ("templates", "t")))
    return time.monotonic() - t0, errors


@pytest.mark.parametrize("leaf", HUGE_CONSTANTS)
def test_huge_constants_are_config_errors_found_without_computing_them(leaf: str) -> None:
    seconds, errors = compile_seconds(leaf)
    assert seconds < 0.5
    assert len(errors) == 1 and errors[0][0] == ("templates", "t", "v")
    assert "too large to compute" in errors[0][1]


@pytest.mark.parametrize("leaf", AMPLIFIERS)
def test_amplifiers_compile_quickly_and_are_refused_when_rendered(leaf: str) -> None:
    seconds, errors = compile_seconds(leaf)
    assert seconds < 0.5 and errors == []
    node = compile_tree(ENV, {"v": leaf}, "t")
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(TemplateLimitError, match="render budget exceeded|too large|not supported|only numbers"):
            render_tree(node, {"n": 999999999})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 2.0
    assert peak < 16 * 1024 * 1024  # refused before building the value (what it asked for is >= 1 GB)


@pytest.mark.parametrize(("leaf", "value"), [
    ("{{ 2 ** 100 }}", 2 ** 100), ("{{ 'ab' * 3 }}", "ababab"), ("{{ [0] * 3 }}", [0, 0, 0]),
    ("{{ 'x'|center(5) }}", "  x  "), ("{{ '%5s'|format('a') }}", "    a"), ("{{ '%s-%d' % ('a', 1) }}", "a-1"),
    ("{{ '{:>4}'.format('a') }}", "   a"), ("{{ '-'.join(['a', 'b']) }}", "a-b"), ("{{ 'a'.ljust(3) }}", "a  "),
    ("{{ range(3)|sum }}", 3), ("{{ [1, 2]|join(',') }}", "1,2"), ("{{ 'ab'|replace('a', 'c') }}", "cb"),
    ("{% for i in range(3) if i %}{{ i }}{% endfor %}", "12"), ("{{ ('a' ~ 1) * 2 }}", "a1a1"),
    ("{% set ns = namespace(x=1) %}{% for i in range(10) %}{% set ns.x = ns.x * 2 %}{% endfor %}{{ ns.x }}", "1024"),
], ids=lambda v: str(v)[:30])
def test_ordinary_uses_of_the_same_operations_still_work(leaf: str, value: Any) -> None:
    assert render_tree(compile_tree(ENV, {"v": leaf}), {}) == {"v": value}


def limited(**limits: Any) -> Any:
    return make_environment(template_filters(), TemplateLimits(**limits))


def test_the_iteration_budget_is_configurable_and_shared_by_a_whole_render() -> None:
    env = limited(max_iterations=100)
    loop = "{% for i in range(60) %}.{% endfor %}"
    assert render_tree(compile_tree(env, {"a": loop}), {}) == {"a": "." * 60}
    node = compile_tree(env, {"a": loop, "b": loop})  # 120 iterations in one render
    with pytest.raises(TemplateLimitError, match="more than 100 loop iterations"):
        render_tree(node, {})
    assert render_tree(compile_tree(env, {"a": loop}), {}) == {"a": "." * 60}  # a fresh budget per render


def test_the_output_budget_counts_every_piece() -> None:
    env = limited(max_output_chars=1000)
    with pytest.raises(TemplateLimitError, match="max_output_chars"):
        render_tree(compile_tree(env, {"a": "{% for i in range(200) %}{{ 'abcdef' }}{% endfor %}"}), {})
    assert len(render_tree(compile_tree(env, {"a": "{% for i in range(100) %}abcdef{% endfor %}"}), {})["a"]) == 600


def test_per_iteration_expensive_loops_stop_at_the_time_limit() -> None:
    env = limited(max_time=0.3, max_output_chars=10_000_000)
    node = compile_tree(env, {"a": "{% for i in range(99999) %}{{ s.count('b') }}{% endfor %}"})
    t0 = time.monotonic()
    with pytest.raises(TemplateLimitError, match="longer than 0.3s"):
        render_tree(node, {"s": "a" * 8_000_000})
    assert time.monotonic() - t0 < 1.5


def test_the_fast_path_has_no_budget_and_the_shipped_templates_stay_on_it() -> None:
    snap, _ = build(ROOT / "routes.d", 1, template_filters())
    templates = {t.name: t for p in snap.providers.values() for t in (p.template, *p.inbound_templates.values())}
    assert templates and not [name for name, t in templates.items() if t.jinja]
    assert not snap.response_headers.jinja
    assert compile_tree(ENV, {"a": "{% for i in [1] %}{{ i }}{% endfor %}"}).jinja


def test_template_limits_are_read_from_the_server_section(tmp_path: Path) -> None:
    from tests.conftest import MINIMAL_CONFIG

    (tmp_path / "c.yaml").write_text(MINIMAL_CONFIG.replace(
        'body: {model: "{{ model }}"}',
        'body: {model: "{% for i in range(8) %}{% for j in range(8) %}.{% endfor %}{% endfor %}"}')
        + "server: {template_limits: {max_iterations: 10, max_output_chars: 999, max_time: 250ms}}\n")
    snap, _ = build(tmp_path, 1, template_filters())
    limits = TemplateLimits(max_iterations=10, max_output_chars=999, max_time=0.25)
    assert snap.server.template_limits == limits
    template = snap.providers["p"].template
    assert template.limits == limits and template.jinja
    with pytest.raises(TemplateLimitError, match="more than 10 loop iterations"):
        render_tree(template.body, {})


def test_router_check_reports_a_huge_power_quickly_with_its_location(tmp_path: Path) -> None:
    from tests.conftest import MINIMAL_CONFIG

    (tmp_path / "c.yaml").write_text(MINIMAL_CONFIG.replace(
        'body: {model: "{{ model }}"}', 'body: {model: "{{ (9**(9**8)) > 1 }}"}'))
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "router", "check", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 20
    assert out.returncode != 0
    assert "c.yaml:8:" in out.stdout + out.stderr and "too large to compute" in out.stdout + out.stderr


def test_walking_a_huge_list_is_charged_per_item() -> None:
    """A list at the size limit cannot be handed to a slow whole-list filter (pprint) unbudgeted."""
    node = compile_tree(ENV, {"v": "{{ {'a': [0] * 4000000}|pprint }}"})
    t0 = time.monotonic()
    with pytest.raises(TemplateLimitError, match="max_iterations"):
        render_tree(node, {})
    assert time.monotonic() - t0 < 1.0


def test_bad_template_limits_are_schema_errors_not_crashes(tmp_path: Path) -> None:
    from router.snapshot import check
    from tests.conftest import MINIMAL_CONFIG

    (tmp_path / "c.yaml").write_text(MINIMAL_CONFIG
                                     + "server: {template_limits: {max_iterations: three, max_time: soon}}\n")
    errors = check(tmp_path, template_filters())
    pointers = {e.pointer for e in errors}
    assert "/server/template_limits/max_iterations" in pointers and "/server/template_limits/max_time" in pointers


def test_comparisons_check_the_clock() -> None:
    """Many scans of a large list, with no loop, call or output in between: each comparison checks
    the time limit."""
    env = limited(max_time=0.2)
    scans = "{% if -1 in big %}{% endif %}" * 5000
    node = compile_tree(env, {"v": "{% set big = range(40000)|list %}" + scans})
    t0 = time.monotonic()
    with pytest.raises(TemplateLimitError, match="longer than 0.2s"):
        render_tree(node, {})
    assert time.monotonic() - t0 < 1.0


DEEP_EXPRESSIONS = ["{{ " + "+".join(["1"] * 400) + " }}", "{{ " + " or ".join(["a"] * 400) + " }}",
                    "{{ " + "(" * 300 + "1" + ")" * 300 + " }}"]


@pytest.mark.parametrize("leaf", DEEP_EXPRESSIONS, ids=["sum", "or", "parentheses"])
def test_a_deeply_nested_expression_is_a_located_config_error(tmp_path: Path, leaf: str) -> None:
    """Jinja's parser and both code generators recurse per operator: a RecursionError (a traceback in
    router check, a 500 from a reload) becomes a config error at the leaf's file:line."""
    from router.errors import ConfigErrors
    from tests.conftest import MINIMAL_CONFIG

    (tmp_path / "c.yaml").write_text(
        MINIMAL_CONFIG.replace('body: {model: "{{ model }}"}', f'body: {{model: "{leaf}"}}'))
    with pytest.raises(ConfigErrors) as caught:
        build(tmp_path, 1, template_filters())
    assert any("nested too deeply" in e.message and e.line == 8 for e in caught.value.errors)
    out = subprocess.run([sys.executable, "-m", "router", "check", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in text
    assert "c.yaml:8:" in text and "nested too deeply" in text


def test_logged_errors_keep_the_templates_own_names_and_drop_run_time_values() -> None:
    from jinja2 import UndefinedError

    from router.templates import client_error, logged_error

    node = compile_tree(ENV, {"v": "{{ nothere + 1 }}", "w": "{{ d[k|upper].x + 1 }}"})
    with pytest.raises(UndefinedError) as caught:
        render_tree(node, {"d": {}, "k": "secret-value"})
    assert logged_error(caught.value, node.words) == "UndefinedError: 'nothere' is undefined"
    node = compile_tree(ENV, {"w": "{{ d[k|upper].x + 1 }}"})
    with pytest.raises(UndefinedError) as caught:
        render_tree(node, {"d": {}, "k": "secret-value"})
    logged = logged_error(caught.value, node.words)
    assert "SECRET" not in logged and logged == "UndefinedError: 'dict object' has no attribute '…'"
    assert client_error(caught.value) == "UndefinedError"
    over = TemplateLimitError("render budget exceeded: more than 5 loop iterations")
    assert client_error(over) == logged_error(over, frozenset()) == over.message


# Calls that cut a string (here one within max_output_chars) into pieces: each piece is an object of
# its own (a list of 1.4 million words is 100 MiB), and urlize spends microseconds per word.
STRING_CUTTERS = [
    "{{ (s * 1390000)|wordcount }}", "{{ (s * 1390000).split() }}", "{{ (s * 1390000).rsplit() }}",
    "{{ (s * 1390000).split(' ') }}", "{{ ('a\\n' * 2000000).splitlines() }}", "{{ ('a.com ' * 690000)|urlize }}",
    "{{ ('x' * 4000000)|list }}", "{{ ('x' * 4000000)|sort }}", "{{ ('x' * 4000000)|unique|list }}",
    "{{ ('x' * 4000000)|batch(1)|list }}", "{{ ('x' * 4000000)|map('upper')|list }}", "{{ (s * 1390000)|title }}",
    "{{ (s * 1390000)|striptags }}", "{{ (s * 1390000)|wordwrap }}", "{{ ('a\\n' * 2000000)|indent }}",
    "{{ ('<' * 4000000)|e }}",
]


@pytest.mark.parametrize("leaf", STRING_CUTTERS)
def test_cutting_a_long_string_into_pieces_is_refused_before_the_pieces_are_built(leaf: str) -> None:
    node = compile_tree(ENV, {"v": leaf})
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(TemplateLimitError, match="render budget exceeded"):
            render_tree(node, {"s": "ab "})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 0.2
    assert peak < 12 * 1024 * 1024  # the string itself (4 MB), not its pieces


@pytest.mark.parametrize(("leaf", "value"), [
    ("{{ 'a b  c'.split() }}", ["a", "b", "c"]), ("{{ 'a,b'.split(',') }}", ["a", "b"]),
    ("{{ 'a,b,c'.rsplit(',', 1) }}", ["a,b", "c"]), ("{{ 'a\\nb'.splitlines() }}", ["a", "b"]),
    ("{{ 'a b'|wordcount }}", 2), ("{{ 'ab'|list }}", ["a", "b"]), ("{{ 'a b'|title }}", "A B"),
    ("{{ '<a>'|e }}", "&lt;a&gt;"), ("{{ 'a\\nb'|indent }}", "a\n    b"), ("{{ ('w ' * 5000).split()|length }}", 5000),
], ids=lambda v: str(v)[:30])
def test_cutting_short_strings_still_works(leaf: str, value: Any) -> None:
    assert render_tree(compile_tree(ENV, {"v": leaf}), {}) == {"v": value}
