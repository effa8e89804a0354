"""The ``prices`` section: what a token costs, per upstream ``provider/model``, in USD per million tokens.

```yaml
prices:
  openai/gpt-4o: {input: 2.50, output: 10.00, cached_input: 1.25}
  "gemini/gemini-2.5-flash*": {input: 0.30, output: 2.50, cached_input: 0.075}
```

An exact ``provider/model`` wins over a pattern; among patterns (``*``: any text) the one with the
most literal characters wins, ties to the one declared first. Costs are whole nano-dollars (1e-9 USD)
so that counters add exactly, in process and in Redis (an integer ``INCRBY``).

The usage the upstream codecs report is normalised: ``input_tokens`` includes the cached ones,
``output_tokens`` includes the reasoning ones. Cached input costs ``cached_input`` (absent: ``input``);
reasoning is output and costs ``output``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from router.canonical import Usage
from router.config import LoadedConfig
from router.errors import ConfigError
from router.model_limits import glob_regex

NANO_PER_USD = 1_000_000_000
NANO_PER_TOKEN = NANO_PER_USD / 1_000_000  # a price per million tokens, as nano-dollars per token
CACHE_MAX = 1024  # models looked up, kept per snapshot (upstream names may come from a wildcard mapping)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Usage) -> int:
        """What ``usage`` cost, in nano-dollars (rounded to the nearest)."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        usd_per_million = ((usage.input_tokens - cached) * self.input + cached * cached_price
                           + usage.output_tokens * self.output)
        return round(usd_per_million * NANO_PER_TOKEN)

    def public(self) -> dict[str, float]:
        shown = {"input": self.input, "output": self.output}
        return shown if self.cached_input is None else {**shown, "cached_input": self.cached_input}


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]
    literal: int  # characters that are not ``*``: more is more specific
    order: int
    price: Price


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Every price of a snapshot; ``price()`` is memoised (bounded) since it runs on every response."""

    exact: dict[str, Price] = field(default_factory=dict)
    patterns: tuple[_Pattern, ...] = ()
    source: dict[str, Price] = field(default_factory=dict)  # as declared, for /admin/config
    _cache: dict[str, Price | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    def price(self, provider: str, model: str) -> Price | None:
        """The price of ``provider/model`` (None: no price is known: the cost counts as 0)."""
        name = f"{provider}/{model}"
        cache = self._cache
        if name in cache:
            return cache[name]
        found = self.exact.get(name)
        if found is None:
            found = next((p.price for p in self.patterns if p.regex.fullmatch(name)), None)
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[name] = found
        return found

    def cost(self, provider: str, model: str, usage: Usage) -> int:
        """Nano-dollars ``usage`` cost on ``provider/model`` (0 without a price)."""
        price = self.price(provider, model)
        return 0 if price is None else price.cost(usage)

    def public(self) -> dict[str, dict[str, float]]:
        return {name: price.public() for name, price in self.source.items()}


def compile_prices(section: dict[str, Any] | None) -> PriceTable:
    declared = {name: Price(float(p["input"]), float(p["output"]),
                            float(p["cached_input"]) if p.get("cached_input") is not None else None)
                for name, p in (section or {}).items()}
    exact = {name: price for name, price in declared.items() if "*" not in name}
    patterns = [_Pattern(re.compile(glob_regex(name), re.DOTALL),
                         len(name.replace("*", "")), i, price)
                for i, (name, price) in enumerate(declared.items()) if "*" in name]
    patterns.sort(key=lambda p: (-p.literal, p.order))
    return PriceTable(exact, tuple(patterns), declared)


def usd(nano: int) -> float:
    """Nano-dollars as USD (what JSON and CSV show)."""
    return nano / NANO_PER_USD


def prices_references(loaded: LoadedConfig, handlers: Collection[str]) -> list[ConfigError]:
    """A price names a provider of this config (a typo would cost 0, and a usd budget would never be
    reached); a provider part with ``*`` is a pattern and names none."""
    section, providers = loaded.data.get("prices"), loaded.data.get("providers")
    if not isinstance(section, dict) or not isinstance(providers, dict):
        return []
    return [loaded.locate(("prices", name), f"no provider '{provider}' in this config (providers: "
                                            f"{', '.join(sorted(map(str, providers))) or 'none'})")
            for name in section if isinstance(name, str) and "/" in name  # no "/": the schema's to say
            for provider in [name.partition("/")[0]] if "*" not in provider and provider not in providers]
