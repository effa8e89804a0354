"""Config-scale benchmark: reload time and per-request matching cost as the config grows.

Generates two config dirs from the shipped ``routes.d`` — a small one (20 mapping rules, the
shipped routes) and a large one (2,000 mapping rules, half exact and half wildcard, and 200
routes) — then measures, in-process:

* reload: ``router.config.load_dir`` + ``router.snapshot.compile_config`` (what a hot reload does);
* model mapping: ``ModelMapper.resolve`` on many distinct names (cold: every name new, so the
  memo misses) and on a small set of repeated names (warm: memo hits);
* routing: ``RouteTable.match`` on many distinct paths (static hits, templated hits and 404s).

    python bench/config_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make ``router`` importable
    sys.path.insert(0, str(REPO))

from router.config import load_dir
from router.mapping import compile_mapping
from router.registry import template_filters
from router.snapshot import Snapshot, compile_config

PROVIDERS = 10
METRICS = {"reload_ms_median": "reload ms (median)", "resolve_cold_exact_ns": "resolve cold exact ns",
           "resolve_cold_wildcard_ns": "resolve cold wildcard ns", "resolve_cold_miss_ns": "resolve cold miss ns",
           "resolve_warm_ns": "resolve warm ns", "route_match_ns": "route match ns"}
SHIPPED = ("00-server.yaml", "30-routes.yaml", "40-retry.yaml", "50-templates.yaml", "60-headers.yaml")


def _providers_yaml() -> str:
    lines = ["providers:"]
    for p in range(PROVIDERS):
        lines += [f"  p{p}:", "    dialect: gemini", "    base_url: http://127.0.0.1:9", "    template: gemini",
                  "    accounts:", f"      - {{email: a{p}@bench.local, api_key: key-{p}}}"]
    return "\n".join(lines) + "\n"


def _mapping_yaml(rules: int) -> str:
    exact = rules // 2
    lines = ["model_mapping:", "  exact:"]
    lines += [f"    model-{i:05d}: p{i % PROVIDERS}/upstream-{i:05d}" for i in range(exact)]
    lines.append("  wildcard:")
    for i in range(rules - exact):
        if i % 4 == 3:  # some two-star patterns
            lines.append(f'    "vendor{i:05d}-*-v*": p{i % PROVIDERS}/v{i:05d}-*-*')
        else:
            lines.append(f'    "family{i:05d}-*": p{i % PROVIDERS}/fam{i:05d}-*')
    lines.append("  default: p0/upstream-default")
    return "\n".join(lines) + "\n"


def _routes_yaml(extra: int) -> str:
    lines = ["routes:"]
    for i in range(extra):
        if i % 2:
            lines.append(f'  - {{path: "/tenant{i:03d}/v1/models/{{model}}:generateContent", methods: [POST], '
                         f"handler: gemini.generate}}")
        else:
            lines.append(f"  - {{path: /tenant{i:03d}/v1/chat/completions, methods: [POST], handler: openai.chat}}")
    return "\n".join(lines) + "\n"


def write_config(directory: Path, rules: int, routes: int) -> Path:
    """A valid config dir with ``rules`` mapping rules and ``routes`` routes in total."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        shutil.copy(REPO / "routes.d" / name, directory / name)
    (directory / "10-providers.yaml").write_text(_providers_yaml())
    (directory / "20-mapping.yaml").write_text(_mapping_yaml(rules))
    shipped_routes = len(load_dir(directory).data.get("routes") or [])
    if routes > shipped_routes:
        (directory / "31-more-routes.yaml").write_text(_routes_yaml(routes - shipped_routes))
    return directory


def reload_once(directory: Path, filters: dict[str, Callable[..., Any]]) -> tuple[float, Snapshot, dict[str, Any]]:
    """Seconds for one load + compile, the snapshot, and the raw ``model_mapping`` section."""
    start = time.perf_counter()
    loaded = load_dir(directory)
    snap = compile_config(loaded, 1, filters)
    return time.perf_counter() - start, snap, loaded.data.get("model_mapping") or {}


def _timed(fn: Callable[[str], Any], items: list[str]) -> float:
    """Mean nanoseconds per call of ``fn`` over ``items``."""
    start = time.perf_counter_ns()
    for item in items:
        fn(item)
    return (time.perf_counter_ns() - start) / max(1, len(items))


def _wildcard_hit(i: int, n: int) -> str:
    return f"vendor{i:05d}-{n}-v2" if i % 4 == 3 else f"family{i:05d}-{n}"


def measure_mapping(section: dict[str, Any], rules: int, count: int, rng: random.Random) -> dict[str, float]:
    """ns per ``resolve`` on a fresh mapper: cold exact hits (every key once), cold wildcard hits and
    cold misses (unique names, so the memo never helps; a miss scans every wildcard), then warm
    (100 names asked over and over, served by the memo)."""
    exact_keys = list(section.get("exact") or {})
    wild = max(1, rules - rules // 2)
    batches = [compile_mapping(section) for _ in range(max(1, count // max(1, len(exact_keys))))]
    start = time.perf_counter_ns()
    for fresh in batches:  # each key once per fresh mapper: always a memo miss
        for key in exact_keys:
            fresh.resolve(key)
    cold_exact = (time.perf_counter_ns() - start) / max(1, len(batches) * len(exact_keys))
    mapper = compile_mapping(section)
    cold_wild = _timed(mapper.resolve, [_wildcard_hit(rng.randrange(wild), n) for n in range(count)])
    mapper = compile_mapping(section)
    cold_miss = _timed(mapper.resolve, [f"unknown-model-{n}" for n in range(count)])
    hot = [*exact_keys[:34], *(_wildcard_hit(rng.randrange(wild), n) for n in range(33)),
           *(f"unknown-model-{n}" for n in range(33))]
    mapper = compile_mapping(section)
    for name in hot:
        mapper.resolve(name)
    warm = _timed(mapper.resolve, hot * max(1, count // len(hot)))
    return {"resolve_cold_exact_ns": cold_exact, "resolve_cold_wildcard_ns": cold_wild,
            "resolve_cold_miss_ns": cold_miss, "resolve_warm_ns": warm}


def paths(count: int, rng: random.Random) -> list[str]:
    """Distinct request paths: a third static hits, a third templated hits, a third 404s."""
    static = ["/v1/chat/completions", "/v1/messages", "/healthz", "/v1/responses"]
    out = []
    for n in range(count):
        kind = n % 3
        if kind == 0:
            out.append(rng.choice(static))
        elif kind == 1:
            out.append(f"/v1beta/models/model-{n}:generateContent")
        else:
            out.append(f"/nowhere/{n}")
    return out


def run(quick: bool = False, work: Path | None = None, sizes: tuple[int, int] = (20, 2_000),
        large_routes: int = 200) -> dict[str, Any]:
    """A small and a large config (``sizes`` mapping rules): reload time (best and median of several
    reloads) and matching costs."""
    filters = template_filters()
    rng = random.Random(1234)
    repeats, names = (1, 3_000) if quick else (5, 30_000)
    owned = work is None
    base = Path(tempfile.mkdtemp(prefix="bench-config-")) if work is None else work
    results: dict[str, Any] = {}
    try:
        for label, rules, routes in (("small", sizes[0], 0), ("large", sizes[1], large_routes)):
            directory = write_config(base / label, rules, routes)
            times = []
            for _ in range(repeats):
                seconds, snap, section = reload_once(directory, filters)
                times.append(seconds * 1000)
            route_ns = _timed(partial(snap.routes.match, "POST"), paths(names, rng))
            results[label] = {
                "rules": rules, "routes": len(snap.routes.routes),
                "reload_ms_min": min(times), "reload_ms_median": statistics.median(times),
                **measure_mapping(section, rules, names, rng), "route_match_ns": route_ns,
            }
    finally:
        if owned:
            shutil.rmtree(base, ignore_errors=True)
    small, large = results["small"], results["large"]
    results["ratios"] = {k: large[k] / small[k] if small[k] else None for k in METRICS}
    return results


def markdown(results: dict[str, Any]) -> str:
    """The config-scale table: one row per config, then the large/small ratio."""
    head = "| config | rules | routes | " + " | ".join(METRICS.values()) + " |"
    rows = [head, "|---|---:|---:|" + "---:|" * len(METRICS)]
    for label in ("small", "large"):
        r = results[label]
        cells = [f"{r[k]:.1f}" if k.endswith("_ms_median") else f"{r[k]:.0f}" for k in METRICS]
        rows.append(f"| {label} | {r['rules']} | {r['routes']} | " + " | ".join(cells) + " |")
    ratio = results["ratios"]
    rows.append("| large / small | | | " + " | ".join(f"{ratio[k]:.1f}×" if ratio[k] else "n/a" for k in METRICS)
                + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="config-scale benchmark (reload + matching)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.quick)
    print(markdown(results))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
