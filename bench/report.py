"""Turn a run's results into ``latest.json``, ``latest.md`` (Markdown tables) and ``latency.png``."""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any

import orjson

from bench import config_scale
from bench.procs import KEY_SUFFIX, REDIS_SUFFIX

# summary key → (column title, format); ratios are taken for the same keys.
COLUMNS = {
    "rps": ("req/s @32", "{:.0f}"),
    "cpu_us_per_req": ("CPU µs/req @32", "{:.0f}"),
    "added_p50_ms": ("added p50 ms", "{:.3f}"),
    "added_p99_ms": ("added p99 ms", "{:.3f}"),
    "ttfb_ms": ("stream TTFB ms", "{:.2f}"),
    "per_chunk_us": ("per-chunk µs", "{:.1f}"),
    "peak_rss_mib": ("peak RSS MiB", "{:.1f}"),
    "rss_growth_pct": ("RSS growth %", "{:+.2f}"),
    "errors": ("errors", "{:d}"),
}
RATIO_KEYS = ("rps", "cpu_us_per_req", "added_p50_ms", "added_p99_ms", "ttfb_ms", "per_chunk_us", "peak_rss_mib",
              "rss_growth_pct")
# At or below these a denominator is noise, not a baseline (an added latency below zero is jitter
# in the direct baseline): the ratio is reported as n/a.
# RSS growth below half a percent is flat, and a ratio of two flat values says nothing.
RATIO_FLOOR = {"added_p50_ms": 0.005, "added_p99_ms": 0.005, "per_chunk_us": 0.5, "rss_growth_pct": 0.5}


def ratio(num: float | None, den: float | None, key: str) -> float | None:
    if num is None or den is None or den <= RATIO_FLOOR.get(key, 1e-9):
        return None
    return num / den


def ratios(summaries: dict[str, dict[str, Any]], reference: str = "bare") -> dict[str, dict[str, float | None]]:
    """``<target>/bare`` for every measured target other than the reference."""
    base = summaries.get(reference)
    if not base:
        return {}
    return {f"{name}/{reference}": {k: ratio(s.get(k), base.get(k), k) for k in RATIO_KEYS if k in s}
            for name, s in summaries.items() if name != reference}


# issue 12: ``state: redis`` may cost at most this much against ``state: memory`` in the same run.
STATE_TARGET = {"min_rps_ratio": 0.95, "max_added_p50_ms": 0.2}


def _against(s: dict[str, Any], twin: dict[str, Any], against: str) -> dict[str, Any]:
    """One subject against its twin measured back to back in the same run: req/s, CPU and added p50
    as ratios (and per round, when there are several), added p50 as a difference."""
    row: dict[str, Any] = {"against": against, **{k: ratio(s.get(k), twin.get(k), k)
                                                  for k in ("rps", "cpu_us_per_req", "cpu_us_per_req_all")}}
    pairs = list(zip(s.get("round_rps") or [], twin.get("round_rps") or [], strict=False))
    if len(pairs) > 1:  # each round measured the two back to back: their ratio shares that moment's load
        row["rps_rounds"] = [a / b for a, b in pairs if b > 0]
        row["rps_paired"] = median(row["rps_rounds"])
    if "added_p50_ms" in s and "added_p50_ms" in twin:
        row["added_p50_ms"] = ratio(s["added_p50_ms"], twin["added_p50_ms"], "added_p50_ms")
        row["added_p50_delta_ms"] = s["added_p50_ms"] - twin["added_p50_ms"]
    return row


def state_backend(summaries: dict[str, dict[str, Any]], redis: dict[str, Any] | None) -> dict[str, Any]:
    """Each ``state:redis`` row against its memory twin (the same name without the suffix), and
    whether the target is met."""
    rows: dict[str, dict[str, Any]] = {}
    for name, s in summaries.items():
        against = name.removesuffix(REDIS_SUFFIX)
        twin = summaries.get(against)
        if not name.endswith(REDIS_SUFFIX) or twin is None:
            continue
        row = _against(s, twin, against)
        rows[name] = {**row, "target_met": _target_met(row)}
    return {"target": STATE_TARGET, "rows": rows, "redis_server": redis}


# issue 13: a client key with limits and usage may cost at most this much throughput with ``state: memory``.
KEYS_TARGET = {"min_rps_ratio": 0.95}


def client_keys(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each ``+key`` row against the same gateway with auth off (its name without ``+key``); the
    target is judged with ``state: memory`` (a ``state:redis`` row is shown against its own twin)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, s in summaries.items():
        against = name.replace(KEY_SUFFIX, "")
        twin = summaries.get(against)
        if KEY_SUFFIX not in name or twin is None:
            continue
        row = _against(s, twin, against)
        rps = row.get("rps_paired", row["rps"])
        met = None if REDIS_SUFFIX in name or rps is None else bool(rps >= KEYS_TARGET["min_rps_ratio"])
        rows[name] = {**row, "target_met": met}
    return {"target": KEYS_TARGET, "rows": rows}


def _target_met(row: dict[str, Any]) -> bool | None:
    """None when the throughput ratio is unknown; the ``--workers`` row is judged on throughput only."""
    rps = row.get("rps_paired", row["rps"])
    if rps is None:
        return None
    delta = row.get("added_p50_delta_ms")
    return bool(rps >= STATE_TARGET["min_rps_ratio"]
                and (delta is None or delta <= STATE_TARGET["max_added_p50_ms"]))


def state_table(state: dict[str, Any], quick: bool = False) -> str:
    """The section's text and table; ``quick``: says that one short slice per number judges nothing."""
    target = state["target"]
    text = ("Each `state: redis` gateway (a redis-server on loopback, no persistence, the shipped `timeout: 50ms` "
            "and `sync_interval: 1s`) against the same gateway with the default `state: memory`, measured back to "
            "back in every phase of this run. req/s @32 is the ratio of the totals, and per round the ratio of each "
            "back-to-back pair; CPU µs/req is at 32 connections and over all the load each received (the steadier "
            "one); both count the gateway's processes, not redis-server's. Target: req/s ≥ "
            f"{target['min_rps_ratio']:.2f}× (the median pair when there are several rounds) and added p50 at "
            f"concurrency 1 at most {target['max_added_p50_ms']} ms above memory (the `--workers` row: "
            "throughput only).\n")
    if quick:
        text += ("\nA smoke run: each number is one short slice, ±10% apart between runs of one build; judge the "
                 "target on a full run (`python bench/run.py`) or with `python bench/instructions.py --state both`.\n")
    table = pair_table(state["rows"])
    redis = state.get("redis_server")
    if redis and state["rows"]:
        table += (f"\nredis-server {redis['version']}: {redis['commands']:,} commands over the whole run, "
                  f"{redis['cpu_s']:.2f} CPU s.\n")
    return text + table


def keys_table(keys: dict[str, Any], quick: bool = False) -> str:
    """The client-key section's text and table."""
    text = ("Each `+key` gateway serves requests that carry a client key with rpm, tpm and concurrency limits "
            "and a budget on the key and on its team (`bench/config_keys/06-auth.yaml`; set so high that nothing "
            "is refused, so every request pays for admission, the rate-limit headers, the budget, the settle and "
            "usage), against the same gateway with `auth: off`, measured back to back in every phase of this run "
            f"(columns as above). Target (issue 13): req/s ≥ {keys['target']['min_rps_ratio']:.2f}× with "
            "`state: memory`; the `state:redis` row is shown against the `state:redis` gateway with auth off, "
            "without a target.\n")
    if quick:
        text += "\nA smoke run: judge the target on a full run or with `python bench/instructions.py --keys`.\n"
    return text + pair_table(keys["rows"])


def pair_table(pairs: dict[str, dict[str, Any]]) -> str:
    """Rows of subjects against their twins (``_against``, plus ``target_met``)."""
    if not pairs:
        return "\nNot measured in this run: see the notes.\n"
    rows = ["| target | against | req/s @32 | req/s by round | CPU µs/req @32 | CPU µs/req all load | added p50 | "
            "added p50 Δ ms | target |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in pairs.items():
        delta = r.get("added_p50_delta_ms")
        cells = [name, r["against"], _ratio_cell(r["rps"]),
                 " / ".join(f"{x:.2f}" for x in r.get("rps_rounds", [])) or "–",
                 _ratio_cell(r["cpu_us_per_req"]), _ratio_cell(r.get("cpu_us_per_req_all")),
                 _ratio_cell(r.get("added_p50_ms")) if "added_p50_ms" in r else "–",
                 "–" if delta is None else f"{delta:+.3f}",
                 {True: "met", False: "**not met**", None: "n/a"}[r["target_met"]]]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n" + "\n".join(rows) + "\n"


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and fmt == "{:d}":
        value = int(value)
    return fmt.format(value)


def _ratio_cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def main_table(summaries: dict[str, dict[str, Any]], table_ratios: dict[str, dict[str, float | None]]) -> str:
    head = "| target | " + " | ".join(title for title, _ in COLUMNS.values()) + " |"
    rows = [head, "|---|" + "---:|" * len(COLUMNS)]
    for name, s in summaries.items():
        rows.append(f"| {name} | " + " | ".join(_cell(s.get(k), fmt) for k, (_, fmt) in COLUMNS.items()) + " |")
    for name, r in table_ratios.items():
        cells = [_ratio_cell(r.get(k)) if k in RATIO_KEYS else "" for k in COLUMNS]
        rows.append(f"| **{name}** | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def curve_table(curves: dict[str, dict[str, Any]]) -> str:
    levels = sorted({int(c) for points in curves.values() for c in points})
    rows = ["| target | " + " | ".join(f"c={c} p50 / p99 ms (req/s)" for c in levels) + " |",
            "|---|" + "---:|" * len(levels)]
    for name, points in curves.items():
        cells = []
        for c in levels:
            p = points.get(str(c))
            cells.append("–" if p is None else
                         f"{p['latency_ms']['p50']:.2f} / {p['latency_ms']['p99']:.2f} ({p['rps']:.0f})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = [
        "# Benchmark results\n",
        f"Mode `{meta['mode']}`, {meta['timestamp']}, Python {meta['python']}, {meta['cpus']} CPU(s), "
        f"load generator: {meta['load_tool']}. Everything on 127.0.0.1 in the same run: the simulator "
        f"(`router sim`), the gateway, the bare reference proxy (`bench/bare_proxy.py`)"
        + (f", LiteLLM {results['targets']['litellm'].get('version', '')}" if "litellm" in results["targets"]
           else "") + ".\n",
        ("Added latency = p50/p99 through the proxy at concurrency 1 minus the same for the simulator "
         "called directly. Per-chunk overhead = (proxy stream time − direct stream time) / upstream "
         f"chunks ({meta.get('upstream_chunks', '?')} per stream). RSS growth is from request "
         f"{meta['memory_requests'][0]:,} to {meta['memory_requests'][1]:,} at concurrency "
         f"{meta['memory_concurrency']}. Ratios are against the bare proxy measured in the same run.\n"),
        main_table(results["summaries"], results["ratios"]),
        "## Latency vs concurrency\n",
        curve_table(results["curves"]),
    ]
    if results.get("state_backend"):
        parts += ["## State backend: redis against memory\n",
                  state_table(results["state_backend"], quick=meta["mode"] != "full")]
    if results.get("client_keys"):
        parts += ["## Client keys: a key with limits against auth off\n",
                  keys_table(results["client_keys"], quick=meta["mode"] != "full")]
    if results.get("notes"):
        parts += ["## Notes\n", "\n".join(f"- {n}" for n in results["notes"]) + "\n"]
    if results.get("config_scale"):
        parts += ["## Config scale (reload and matching cost)\n", config_scale.markdown(results["config_scale"])]
    return "\n".join(parts)


def chart(curves: dict[str, dict[str, Any]], path: Path) -> str | None:
    """Latency p50 vs concurrency, one line per target; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): latency.png not drawn"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        levels = sorted(int(c) for c in points)
        style = "--" if name == "direct" else "-"
        ax.plot(levels, [points[str(c)]["latency_ms"]["p50"] for c in levels], style, marker="o", label=name)
    levels = sorted({int(c) for points in curves.values() for c in points})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # LiteLLM sits orders of magnitude above the others
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("latency p50 (ms, log scale)")
    ax.set_title("Non-stream chat latency vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write the three result files; a missing matplotlib becomes a note, not a failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "latency.png"
    problem = chart(results["curves"], png)
    if problem:
        results.setdefault("notes", []).append(problem)
    paths = {"json": out_dir / "latest.json", "md": out_dir / "latest.md"}
    paths["json"].write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    paths["md"].write_text(markdown(results))
    if not problem:
        paths["png"] = png
    return paths
