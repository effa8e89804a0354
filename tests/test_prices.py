"""The ``prices`` section: lookup precedence, cost arithmetic in nano-dollars, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.canonical import Usage
from router.prices import CACHE_MAX, Price, compile_prices, usd
from router.registry import template_filters
from router.snapshot import check
from tests.conftest import MINIMAL_CONFIG


def test_cost_counts_cached_input_at_its_own_price_and_reasoning_as_output() -> None:
    price = Price(input=2.50, output=10.00, cached_input=1.25)
    # 1000 input of which 400 cached, 500 output of which 200 reasoning (normalised usage)
    cost = price.cost(Usage(input_tokens=1000, output_tokens=500, cached_tokens=400, reasoning_tokens=200))
    assert cost == round((600 * 2.50 + 400 * 1.25 + 500 * 10.00) * 1000)  # 7,000,000 nano-USD
    assert usd(cost) == pytest.approx(0.007)


def test_cached_input_defaults_to_the_input_price_and_never_exceeds_input() -> None:
    price = Price(input=1.0, output=2.0)
    assert price.cost(Usage(input_tokens=100, cached_tokens=100)) == 100_000
    assert price.cost(Usage(input_tokens=10, cached_tokens=50)) == 10_000  # a bogus report is clamped


def test_exact_beats_patterns_and_the_most_literal_pattern_wins() -> None:
    table = compile_prices({
        "gemini/*": {"input": 1, "output": 1},
        "gemini/gemini-2.5-*": {"input": 2, "output": 2},
        "gemini/gemini-2.5-flash": {"input": 3, "output": 3},
        "*/gemini-2.5-*": {"input": 4, "output": 4},
    })
    assert table.price("gemini", "gemini-2.5-flash") == Price(3, 3)
    assert table.price("gemini", "gemini-2.5-pro") == Price(2, 2)  # 18 literal characters beat 13
    assert table.price("gemini", "gemini-1.5") == Price(1, 1)
    assert table.price("vertex", "gemini-2.5-pro") == Price(4, 4)
    assert table.price("openai", "gpt-4o") is None
    assert table.cost("openai", "gpt-4o", Usage(input_tokens=10)) == 0


def test_the_lookup_cache_is_bounded() -> None:
    table = compile_prices({"p/*": {"input": 1, "output": 1}})
    for i in range(CACHE_MAX * 2):
        assert table.price("p", f"m{i}") == Price(1, 1)
    assert len(table._cache) <= CACHE_MAX


def test_public_shows_the_table_as_declared() -> None:
    table = compile_prices({"openai/gpt-4o": {"input": 2.5, "output": 10, "cached_input": 1.25}})
    assert table.public() == {"openai/gpt-4o": {"input": 2.5, "output": 10.0, "cached_input": 1.25}}


@pytest.mark.parametrize(("extra", "needle"), [
    ("prices:\n  gpt-4o: {input: 1, output: 1}\n", "prices"),  # no provider/
    ("prices:\n  openai/gpt-4o: {input: 1}\n", "output"),
    ("prices:\n  openai/gpt-4o: {input: -1, output: 1}\n", "input"),
    ("prices:\n  openai/gpt-4o: {input: 1, output: 1, cache: 1}\n", "cache"),
])
def test_a_bad_price_is_a_located_error(tmp_path: Path, extra: str, needle: str) -> None:
    (tmp_path / "00-base.yaml").write_text(MINIMAL_CONFIG)
    (tmp_path / "50-prices.yaml").write_text(extra)
    errors = [str(e) for e in check(tmp_path, template_filters(), env={})]
    assert errors and all("50-prices.yaml:" in e for e in errors), errors
    assert any(needle in e for e in errors), errors


def test_a_bad_name_is_located_at_its_own_entry_in_its_own_file(tmp_path: Path) -> None:
    (tmp_path / "00-base.yaml").write_text(MINIMAL_CONFIG)
    (tmp_path / "50-prices.yaml").write_text("prices:\n  p/m: {input: 1, output: 1}\n")
    (tmp_path / "51-prices.yaml").write_text("prices:\n  nomodel: {input: 1, output: 2}\n")
    errors = [str(e) for e in check(tmp_path, template_filters(), env={})]
    assert len(errors) == 1 and errors[0].startswith("51-prices.yaml:2:"), errors
    assert "'nomodel'" in errors[0] and "provider/model" in errors[0]


def test_a_price_for_a_provider_the_config_lacks_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "00-base.yaml").write_text(MINIMAL_CONFIG)
    (tmp_path / "50-prices.yaml").write_text("prices:\n  '*/m': {input: 1, output: 1}\n  nosuch/gpt-4o: {input: 1, output: 2}\n")
    errors = [str(e) for e in check(tmp_path, template_filters(), env={})]
    assert len(errors) == 1 and errors[0].startswith("50-prices.yaml:3:"), errors
    assert "no provider 'nosuch'" in errors[0]
