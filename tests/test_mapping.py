"""router.mapping: exact > wildcard > default, deterministic wildcard precedence, * substitution."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.mapping import ModelMapper, Target, compile_mapping

MAPPER = compile_mapping({
    "exact": {"gpt-4o": "gemini/gemini-2.5-flash", "gemini-2.5-pro": "vertex/pro-exact"},
    "wildcard": {
        "gpt-*": "openai/gpt-*",
        "gpt-4*": "gemini/gemini-2.5-pro",
        "gemini-*": "gemini/gemini-*",
        "*-mini": "cheap/*-small",
        "claude-*-*": "anthropic/claude-*-*",
        "x*": "first/x",
        "*y": "second/y",
        "o*": "openai/o*",
    },
    "default": "gemini/gemini-2.5-flash",
})


@pytest.mark.parametrize(("model", "provider", "upstream", "rule"), [
    ("gpt-4o", "gemini", "gemini-2.5-flash", "exact:gpt-4o"),
    ("gemini-2.5-pro", "vertex", "pro-exact", "exact:gemini-2.5-pro"),
    ("gpt-4.1", "gemini", "gemini-2.5-pro", "wildcard:gpt-4*"),
    ("gpt-3.5-turbo", "openai", "gpt-3.5-turbo", "wildcard:gpt-*"),
    ("gemini-3-flash", "gemini", "gemini-3-flash", "wildcard:gemini-*"),
    ("o3-mini", "cheap", "o3-small", "wildcard:*-mini"),
    ("o3", "openai", "o3", "wildcard:o*"),
    ("claude-sonnet-4", "anthropic", "claude-sonnet-4", "wildcard:claude-*-*"),
    ("xy", "first", "x", "wildcard:x*"),
    ("llama-3", "gemini", "gemini-2.5-flash", "default"),
    ("", "gemini", "gemini-2.5-flash", "default"),
], ids=["exact", "exact-beats-wildcard", "most-literal-wins", "shorter-wildcard", "star-substituted",
        "suffix-pattern", "short-prefix", "two-stars", "tie-declared-first", "default", "empty-model"])
def test_resolve(model: str, provider: str, upstream: str, rule: str) -> None:
    assert MAPPER.resolve(model) == Target(provider, upstream, rule)


def test_no_match_and_no_default_is_none() -> None:
    mapper = compile_mapping({"exact": {"a": "p/a"}, "wildcard": {"b*": "p/*"}})
    assert mapper.resolve("c") is None
    assert mapper.resolve("c") is None  # memoised miss stays a miss
    assert compile_mapping(None).resolve("anything") is None


def test_targets_with_more_stars_reuse_the_last_capture() -> None:
    mapper = compile_mapping({"wildcard": {"m-*": "p/*-*", "n": "p/*"}})
    assert mapper.resolve("m-x") == Target("p", "x-x", "wildcard:m-*")
    assert mapper.resolve("n") == Target("p", "*", "wildcard:n")  # no star to take from


def test_model_names_are_matched_literally() -> None:
    mapper = compile_mapping({"wildcard": {"a.b*": "p/*", "(x)*": "q/*"}})
    assert mapper.resolve("aXb1") is None
    assert mapper.resolve("a.b1") == Target("p", "1", "wildcard:a.b*")
    assert mapper.resolve("(x)2") == Target("q", "2", "wildcard:(x)*")


def test_client_models_lists_exact_keys() -> None:
    assert MAPPER.client_models() == ["gpt-4o", "gemini-2.5-pro"]


def test_cache_is_bounded() -> None:
    mapper = ModelMapper({}, {"*": "p/*"}, None)
    for i in range(ModelMapper.CACHE_MAX + 10):
        assert mapper.resolve(f"m{i}") == Target("p", f"m{i}", "wildcard:*")
    assert len(mapper._cache) <= ModelMapper.CACHE_MAX


# --- property: the compiled matcher agrees with a plain reference implementation ---------------------

def _ref_match(pattern: str, model: str) -> tuple[str, ...] | None:
    """fnmatch with only ``*``, by plain backtracking; each ``*`` takes the shortest text that works."""
    parts = pattern.split("*")

    def go(i: int, pos: int) -> tuple[str, ...] | None:
        if not model.startswith(parts[i], pos):
            return None
        pos += len(parts[i])
        if i == len(parts) - 1:
            return () if pos == len(model) else None
        for end in range(pos, len(model) + 1):
            rest = go(i + 1, end)
            if rest is not None:
                return (model[pos:end], *rest)
        return None

    return go(0, 0)


def _ref_resolve(exact: dict[str, str], wildcard: dict[str, str], default: str | None, model: str
                 ) -> tuple[str, str] | None:
    if model in exact:
        return exact[model], f"exact:{model}"
    ranked = sorted(enumerate(wildcard.items()), key=lambda it: (-len(it[1][0].replace("*", "")), it[0]))
    for _, (pattern, target) in ranked:
        caps = _ref_match(pattern, model)
        if caps is not None:
            out = target
            if caps:
                pieces = target.split("*")
                out = pieces[0] + "".join(caps[min(i, len(caps) - 1)] + rest for i, rest in enumerate(pieces[1:]))
            return out, f"wildcard:{pattern}"
    return (default, "default") if default else None


_alpha = st.text("ab-", max_size=4)
_pattern = st.lists(_alpha, min_size=1, max_size=4).map("*".join)
_target = st.builds(lambda a, b: f"p/{a}*{b}", _alpha, _alpha) | st.just("p/fixed")


@settings(max_examples=300, deadline=None)
@given(exact=st.dictionaries(_alpha, st.just("e/x"), max_size=2),
       wildcard=st.dictionaries(_pattern, _target, max_size=5),
       default=st.none() | st.just("d/m"),
       models=st.lists(st.text("ab-", max_size=7), min_size=1, max_size=8))
def test_matcher_agrees_with_reference(exact: dict[str, str], wildcard: dict[str, str], default: str | None,
                                       models: list[str]) -> None:
    mapper = compile_mapping({"exact": exact, "wildcard": wildcard, "default": default})
    for model in models:
        got = mapper.resolve(model)
        want = _ref_resolve(exact, wildcard, default, model)
        if want is None:
            assert got is None
        else:
            target, rule = want
            assert got is not None and (f"{got.provider}/{got.model}", got.rule) == (target, rule)
