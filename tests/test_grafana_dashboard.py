"""contrib/grafana/router-dashboard.json: every PromQL expression in it (panels, annotations, template
variables) names only metrics the gateway exports, and only labels they carry, as the running gateway's
``GET /metrics`` shows them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import FAST_RETRY, ROOT, start_gateway

DASHBOARD = ROOT / "contrib" / "grafana" / "router-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
            "summary": ("_count", "_sum", "")}
# labels a scrape may carry that no collector sets: Prometheus's own, and the per-worker series of the
# --workers merge (router.metrics_shared)
EXTRA_LABELS = {"le", "worker", "instance", "job"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan"}
HI = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}


def expressions(doc: Any) -> Iterator[str]:
    """Every ``expr`` (targets, annotations) and every template variable's query, wherever it sits."""
    if isinstance(doc, dict):
        for name, value in doc.items():
            promql = name in ("expr", "definition") or (name == "query" and doc.get("type") == "query")
            if promql and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from expressions(item)


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names one PromQL expression uses."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings hold regexes, not names
    for block in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", block))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels |= {g.strip() for g in group.split(",") if g.strip()}
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries: [5m], [$__rate_interval], [2m:]
    m = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", text)
    if m:
        return {m.group(1)}, labels | {m.group(2)}
    names = {n for n in re.findall(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", text)
             if n.lower() not in KEYWORDS}
    return names, labels


async def exported(config_dir: Path) -> tuple[set[str], set[str]]:
    """The sample names and label names the gateway's /metrics shows after some traffic (a retried 429),
    with circuit breaking on."""
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    (config_dir / "45-circuit.yaml").write_text("circuit: {consecutive_failures: 5}\n")  # its samples too
    h = await start_gateway(config_dir)
    try:
        await h.faults("sim-key-a", {"status": 429, "retry_after": 1})
        for _ in range(3):
            await h.post_json("/v1/chat/completions", HI)
        async with h.session.get(h.url + "/metrics") as r:
            text = await r.text()
    finally:
        await h.close()
    names: set[str] = set()
    labels: set[str] = set(EXTRA_LABELS)
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            family = family.removesuffix("_total") if kind == "counter" else family  # named either way
            names |= {family + suffix for suffix in SUFFIXES.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
            labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=\"", line))
    return names, labels


def test_expression_parsing() -> None:
    names, labels = names_and_labels(
        'histogram_quantile(0.99, sum by (route, le) (rate(router_x_bucket{key=~"a|b", status!="200"}[5m]))) '
        "/ clamp_min(sum(router_y_total), 1e-9) * 60")
    assert names == {"router_x_bucket", "router_y_total"} and labels == {"route", "le", "key", "status"}
    assert names_and_labels("label_values(router_requests_total, key)") == ({"router_requests_total"}, {"key"})
    assert names_and_labels("changes(max(router_g)[2m:]) > 0")[0] == {"router_g"}


async def test_every_dashboard_query_names_exported_metrics(config_dir: Path) -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    assert dashboard["panels"] and dashboard["title"]
    exprs = list(expressions(dashboard))
    assert len(exprs) >= 20
    names, labels = await exported(config_dir)
    used: set[str] = set()
    for expr in exprs:
        metrics, wanted = names_and_labels(expr)
        assert metrics, f"no metric in {expr!r}"
        assert metrics <= names, f"{expr!r} names {sorted(metrics - names)}, not exported"
        assert wanted <= labels, f"{expr!r} uses labels {sorted(wanted - labels)} no exported metric has"
        used |= metrics
    # the dashboard covers what an operator asks first: traffic, errors, latency, tokens, accounts, reloads
    for name in ("router_requests_total", "router_request_duration_seconds_bucket", "router_tokens_total",
                 "router_time_to_first_byte_seconds_bucket", "router_accounts_cooling", "router_circuit_state",
                 "router_config_reloads_total", "router_config_generation"):
        assert name in used, name
