"""The status page (``router.status``): the shell served to anyone without data, ``GET /admin/status``
behind the admin key and without secrets, the traffic ring and its summary, merged across workers."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from router.status.summary import merge, quantile, summarize
from router.status.traffic import BINS, FAILED, LATENCY, MAX_ROWS, SECONDS, Traffic
from tests.conftest import FAST_RETRY, Harness, start_gateway

KEY, ADMIN_KEY = "sk-status-client-1", "sk-status-admin-2"
AUTH = f"""\
auth:
  mode: strict
  api_keys:
    - {{name: alpha, key: "{KEY}"}}
  admin_keys:
    - {{name: ops, key_sha256: "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"}}
"""
SECRETS = (KEY, ADMIN_KEY, hashlib.sha256(ADMIN_KEY.encode()).hexdigest(), "sim-key-a", "sim-key-b", "sim-key-openai")
HI = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def h(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "00-server.yaml").write_text(AUTH)
    (config_dir / "40-retry.yaml").write_text(FAST_RETRY)
    harness = await start_gateway(config_dir)
    try:
        yield harness
    finally:
        await harness.close()


async def status(h: Harness, key: str = ADMIN_KEY) -> tuple[int, Any, bytes]:
    async with h.session.get(h.url + "/admin/status", headers=bearer(key)) as r:
        raw = await r.read()
        return r.status, orjson.loads(raw), raw


async def test_the_page_is_served_to_anyone_and_holds_no_data(h: Harness) -> None:
    async with h.session.get(h.url + "/status") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert 'id="login-form"' in page and "/status/status.js" in page
    assert "http://" not in page.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in page
    for asset, kind in (("status.js", "text/javascript"), ("status.css", "text/css")):
        async with h.session.get(h.url + "/status/" + asset) as r:
            assert r.status == 200 and r.content_type == kind
            assert "https://" not in await r.text()  # no CDN
    async with h.session.get(h.url + "/status/../gateway.py") as r:
        assert r.status == 404


async def test_admin_status_needs_the_admin_key(h: Harness) -> None:
    async with h.session.get(h.url + "/admin/status") as r:
        assert r.status == 401
    assert (await status(h, KEY))[0] == 401


async def test_admin_status_shows_config_accounts_traffic_and_failures_without_secrets(h: Harness) -> None:
    for _ in range(3):
        code, _, _ = await h.post_json("/v1/chat/completions", HI, headers=bearer(KEY))
        assert code == 200
    await h.faults("*", {"status": 400, "message": "bad thing"})
    code, _, headers = await h.post_json("/v1/chat/completions", HI, headers=bearer(KEY))
    assert code == 400
    (h.config_dir / "99-bad.yaml").write_text("providers:\n  x: [unclosed\n")
    assert not await h.gateway.reload("test")
    code, doc, raw = await status(h)
    assert code == 200
    assert doc["listen"].startswith("127.0.0.1:") and doc["auth"]["mode"] == "strict"
    assert doc["config"]["generation"] == 1 and doc["config"]["reloads"] == {"ok": 1, "failed": 1}
    err = doc["config"]["last_error"]["errors"][0]
    assert err["file"].endswith("99-bad.yaml") and err["line"] >= 1 and err["column"] >= 1
    assert [r["ok"] for r in doc["config"]["history"]] == [False, True]  # newest first
    states = {p["name"]: p["state"] for p in doc["providers"]}
    assert states["simulator"] == "simulated"
    assert {"simulator/sim-a@simulator.local", "simulator/sim-b@simulator.local"} <= {a["key"] for a in doc["accounts"]}
    traffic = doc["traffic"]
    assert traffic["totals"]["requests"] == 4 and traffic["totals"]["errors"] == 1
    by_model = {m["name"]: m for m in traffic["model"]}
    assert by_model["gemini-2.5-flash"]["requests"] == 4 and by_model["gemini-2.5-flash"]["tokens_out"] > 0
    assert by_model["gemini-2.5-flash"]["p50_ms"] is not None
    assert {k["name"] for k in traffic["key"]} == {"alpha"}
    assert len(traffic["totals"]["requests_per_s"]) == SECONDS
    failed = doc["failed"]
    assert failed[0]["request_id"] == headers["X-Request-Id"] and failed[0]["status"] == 400
    for secret in SECRETS:
        assert secret.encode() not in raw


async def test_a_429_cools_the_account_on_the_page(h: Harness) -> None:
    await h.faults("sim-key-a", {"status": 429, "retry_after": 30})
    await h.faults("sim-key-b", {"status": 429, "retry_after": 30})
    await h.post_json("/v1/chat/completions", HI, headers=bearer(KEY))
    _, doc, _ = await status(h)
    cooling = [a for a in doc["accounts"] if a["state"] == "cooling"]
    assert cooling and all(a["cooling_until"] > doc["at"] for a in cooling)


def _x(model: str = "m", key: str = "k", provider: str = "p", ttfb: float | None = 0.01) -> Any:
    return SimpleNamespace(endpoint=SimpleNamespace(codec=object()), client_model=model, client_key=key,
                           provider=SimpleNamespace(name=provider), usage=SimpleNamespace(input_tokens=3,
                                                                                          output_tokens=5),
                           ttfb=ttfb, request_id="rid", handler="openai.chat", attempts=[], error="boom")


def test_traffic_is_bounded() -> None:
    t = Traffic()
    for i in range(MAX_ROWS + 50):
        t.observe(_x(model=f"m{i}"), 200, 0.02)
    for _ in range(FAILED + 5):
        t.observe(_x(), 502, 0.02)
    export = t.export()
    rows = export["seconds"][-1][1] if len(export["seconds"]) == 1 else [r for s in export["seconds"] for r in s[1]]
    assert len({tuple(r[:3]) for r in rows}) <= 2 * (MAX_ROWS + 1)  # a second may have turned meanwhile
    assert any(r[0] == "other" for r in rows) and len(export["failed"]) == FAILED
    health = SimpleNamespace(endpoint=SimpleNamespace(codec=None))
    t.observe(health, 200, 0.1)  # type: ignore[arg-type]  # not API traffic: not counted


def test_summary_sums_workers_and_reads_quantiles() -> None:
    a, b = Traffic(), Traffic()
    for _ in range(10):
        a.observe(_x(), 200, 0.02)
        b.observe(_x(provider="q"), 500, 0.2)
    now = float(a.export()["seconds"][-1][0])
    out = summarize([a.export(now), b.export(now)], now)
    assert out["totals"]["requests"] == 20 and out["totals"]["errors"] == 10
    assert {p["name"]: p["requests"] for p in out["provider"]} == {"p": 10, "q": 10}
    assert out["totals"]["tokens_out"] == 100 and sum(out["totals"]["requests_per_s"]) == 20
    assert 10 <= out["totals"]["p50_ms"] <= 250 and 100 <= out["totals"]["p99_ms"] <= 250
    hist = [0] * BINS
    hist[3] = 4  # 0.025..0.05 s
    assert quantile(hist, 0.5) == pytest.approx(0.0375) and quantile([0] * BINS, 0.5) is None
    assert merge([{"seconds": [[int(now) - SECONDS - 5, [["m", "k", "p", *([1] * (LATENCY + 2 * BINS))]]]]}],
                 int(now)) == {}  # older than the ring: dropped


async def test_the_readme_example_is_the_shipped_routes_and_works(config_dir: Path) -> None:
    import re

    from ruamel.yaml import YAML

    from tests.conftest import ROOT, ROUTES

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Status page"):readme.index("## Several workers and replicas")]
    block = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[0]
    example = YAML(typ="safe").load(block)
    shipped = YAML(typ="safe").load((ROUTES / "30-routes.yaml").read_text())["routes"]
    assert all(route in shipped for route in example["routes"])
    (config_dir / "00-server.yaml").write_text(orjson.dumps({"auth": example["auth"]}).decode())
    h = await start_gateway(config_dir, env={"ROUTER_ADMIN_KEY": ADMIN_KEY})
    try:
        assert (await status(h))[0] == 200 and (await status(h, "sk-other"))[0] == 401
        async with h.session.get(h.url + "/status") as r:
            assert r.status == 200
    finally:
        await h.close()


async def test_without_circuit_breaking_accounts_show_circuit_off_like_providers(h: Harness) -> None:
    _, doc, _ = await status(h)
    assert doc["providers"] and all(p["circuit"] is None for p in doc["providers"])
    assert doc["accounts"] and all(a["circuit"] is None for a in doc["accounts"])


async def test_an_ejected_account_shows_when_its_ejection_ends(h: Harness) -> None:
    (h.config_dir / "45-circuit.yaml").write_text("circuit: {consecutive_failures: 1, base_ejection: 20s}\n")
    assert await h.gateway.reload("test")
    await h.faults("sim-key-a", {"status": 500, "message": "down"})
    for _ in range(4):  # until an attempt used sim-a (the pick may start with sim-b)
        code, _, _ = await h.post_json("/v1/chat/completions", HI, headers=bearer(KEY))
        assert code == 200  # when sim-a failed, the other account answered
        if any(a["state"] == "ejected" for a in h.gateway.accounts_status()):
            break
    _, doc, _ = await status(h)
    accounts = {a["key"]: a for a in doc["accounts"]}
    ejected = accounts["simulator/sim-a@simulator.local"]
    assert ejected["state"] == "ejected" and ejected["circuit"]["state"] == "open"
    assert doc["at"] < ejected["ejected_until"] <= doc["at"] + 20.5
    other = accounts["simulator/sim-b@simulator.local"]
    assert other["circuit"]["state"] == "closed" and "ejected_until" not in other


async def test_a_config_error_fixed_by_a_good_reload_says_so(h: Harness) -> None:
    (h.config_dir / "99-bad.yaml").write_text("providers:\n  x: [unclosed\n")
    assert not await h.gateway.reload("test")
    _, doc, _ = await status(h)
    assert "fixed_by" not in doc["config"]["last_error"]
    (h.config_dir / "99-bad.yaml").unlink()
    assert await h.gateway.reload("test")
    _, doc, _ = await status(h)
    err = doc["config"]["last_error"]
    assert err["errors"][0]["file"].endswith("99-bad.yaml") and err["errors"][0]["line"] >= 1  # still shown
    assert err["fixed_by"]["generation"] == doc["config"]["generation"] == 2
    assert err["fixed_by"]["at"] >= err["at"]
    (h.config_dir / "99-bad.yaml").write_text("providers:\n  x: [unclosed\n")
    assert not await h.gateway.reload("test")  # broken again: a new error, not fixed
    _, doc, _ = await status(h)
    assert "fixed_by" not in doc["config"]["last_error"]
