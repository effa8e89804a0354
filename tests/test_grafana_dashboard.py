"""contrib/grafana/router-dashboard.json: every PromQL expression in it (panels, annotations, template
variables) names only metrics the gateway exports, each selector only labels its own metric carries, as
the running gateway's ``GET /metrics`` shows them."""

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


async def exported(config_dir: Path) -> dict[str, set[str]]:
    """Each sample name the gateway's /metrics shows after some traffic (a retried 429, an ejection),
    with circuit breaking on, and the label names that metric's own samples carry."""
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    (config_dir / "45-circuit.yaml").write_text("circuit: {consecutive_failures: 1}\n")  # its samples too
    h = await start_gateway(config_dir)
    try:
        await h.faults("sim-key-a", {"status": 429, "retry_after": 1})
        await h.faults("sim-key-b", {"status": 500})  # an ejection: its counter's samples and labels
        for _ in range(3):
            await h.post_json("/v1/chat/completions", HI)
        async with h.session.get(h.url + "/metrics") as r:
            text = await r.text()
    finally:
        await h.close()
    return metric_labels(text)


def metric_labels(text: str) -> dict[str, set[str]]:
    """A Prometheus text exposition's sample names, each with the label names its samples carry (a
    counter also under its name without ``_total``: PromQL may name it either way)."""
    out: dict[str, set[str]] = {}
    aliases: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            for suffix in SUFFIXES.get(kind, ("",)):
                out.setdefault(family.removesuffix("_total") + suffix if kind == "counter" else family + suffix,
                               set())
            if kind == "counter":
                aliases[family.removesuffix("_total")] = family.removesuffix("_total") + "_total"
        elif line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            out.setdefault(name, set()).update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=\"", line))
    for short, total in aliases.items():
        out[short] = out.setdefault(total, set())
    return out


def problems(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """What is wrong with one expression: a metric the gateway does not export, a selector's label its
    own metric does not carry, a grouping label (by, on...) no metric of the expression carries."""
    out = []
    metrics, grouping = names_and_labels(expr)[0], groupings(expr)
    if not metrics:
        out.append("no metric")
    out += [f"{name} is not exported" for name in sorted(metrics - exported.keys())]
    for name, labels in selectors(expr):
        extra = labels - exported.get(name, set()) - EXTRA_LABELS
        out += [f"{name} has no label {label}" for label in sorted(extra)] if name in exported else []
    carried = set(EXTRA_LABELS).union(*(exported.get(name, set()) for name in metrics))
    out += [f"no metric of it has the label {label}" for label in sorted(grouping - carried)]
    return out


def groupings(expr: str) -> set[str]:
    """The label names of an expression's ``by``, ``without``, ``on``, ``ignoring`` and ``group_*`` clauses."""
    text = re.sub(r"\{[^}]*\}", " ", re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr))
    clauses = re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text)
    return {g.strip() for group in clauses for g in group.split(",") if g.strip()}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each ``metric{...}`` selector (and ``label_values(metric, label)``) of an expression, with the
    label names it matches on."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    out = [(name, set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", block)))
           for name, block in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", text)]
    m = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", text)
    if m:
        out.append((m.group(1), {m.group(2)}))
    return out


def test_expression_parsing() -> None:
    names, labels = names_and_labels(
        'histogram_quantile(0.99, sum by (route, le) (rate(router_x_bucket{key=~"a|b", status!="200"}[5m]))) '
        "/ clamp_min(sum(router_y_total), 1e-9) * 60")
    assert names == {"router_x_bucket", "router_y_total"} and labels == {"route", "le", "key", "status"}
    assert names_and_labels("label_values(router_requests_total, key)") == ({"router_requests_total"}, {"key"})
    assert names_and_labels("changes(max(router_g)[2m:]) > 0")[0] == {"router_g"}


def test_each_selectors_labels_are_checked_against_its_own_metric() -> None:
    exported = {"router_requests_total": {"key", "route"}, "router_config_reloads_total": {"result"},
                "router_x_bucket": {"route"}}
    # key is some metric's label, but not this metric's: the check must fail
    assert problems('sum(rate(router_config_reloads_total{key=~"$key"}[5m]))', exported) == \
        ["router_config_reloads_total has no label key"]
    assert problems('sum by (route) (rate(router_requests_total{key=~"$key"}[5m]))', exported) == []
    assert problems("label_values(router_config_reloads_total, key)", exported) == \
        ["router_config_reloads_total has no label key"]
    assert problems('sum by (route, le) (rate(router_x_bucket{route!=""}[5m])) / sum(router_y_total)', exported) == \
        ["router_y_total is not exported"]
    assert problems("sum by (team) (rate(router_requests_total[5m]))", exported) == \
        ["no metric of it has the label team"]
    assert metric_labels('# TYPE router_r_total counter\nrouter_r_total{key="a",route="/"} 1\n'
                         '# TYPE router_g gauge\n')["router_r"] == {"key", "route"}


async def test_every_dashboard_query_names_exported_metrics(config_dir: Path) -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    assert dashboard["panels"] and dashboard["title"]
    exprs = list(expressions(dashboard))
    assert len(exprs) >= 20
    metrics = await exported(config_dir)
    used: set[str] = set()
    for expr in exprs:
        assert not problems(expr, metrics), (expr, problems(expr, metrics))
        used |= names_and_labels(expr)[0]
    # the dashboard covers what an operator asks first: traffic, errors, latency, tokens, accounts, reloads
    for name in ("router_requests_total", "router_request_duration_seconds_bucket", "router_tokens_total",
                 "router_time_to_first_byte_seconds_bucket", "router_accounts_cooling", "router_circuit_state",
                 "router_config_reloads_total", "router_config_generation"):
        assert name in used, name


def test_every_query_uses_the_data_source_variable_and_nothing_asks_for_another() -> None:
    """The data source is the dashboard's ``datasource`` variable (picked in its drop-down, the default
    Prometheus at first), everywhere: no ``__inputs`` an import dialog would ask for and then not use."""
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    assert "__inputs" not in dashboard
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    sources: list[Any] = []

    def walk(doc: Any) -> None:
        if isinstance(doc, dict):
            sources.extend([doc["datasource"]] if "datasource" in doc else [])
            for value in doc.values():
                walk(value)
        elif isinstance(doc, list):
            for item in doc:
                walk(item)

    walk(dashboard)
    assert len(sources) >= 20
    assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources), sources
    assert "DS_PROMETHEUS" not in DASHBOARD.read_text()
