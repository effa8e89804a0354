"""Access log, Prometheus metrics, admin API and graceful shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from router.logs import JsonFormatter
from router.sim import SimServer
from tests.conftest import Harness, start_gateway
from tests.serving import free_port, serve_process, stop, wait_healthy

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
SECRETS = ("sim-key-a", "sim-key-b", "sk-client-secret", "sk-admin-secret")


async def test_access_log_line(gw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = io.BytesIO()
    gw.gateway.access_log.stream = sink
    gw.gateway.access_log.configure("json", True)
    status, _, headers = await gw.post_json("/v1/chat/completions", {**CHAT, "stream": False},
                                            headers={"X-Request-Id": "req-123"})
    assert status == 200 and headers["X-Request-Id"] == "req-123"
    await asyncio.sleep(0.7)  # the periodic flush
    line = json.loads(sink.getvalue().splitlines()[-1])
    assert line["logger"] == "router.access" and line["ts"].endswith("Z")
    assert line["request_id"] == "req-123"
    assert line["route"] == "/v1/chat/completions" and line["status"] == 200
    assert line["client_model"] == "gpt-4o" and line["upstream_model"] == "gemini-2.5-flash"
    assert line["provider"] == "simulator" and line["account"].endswith("@simulator.local")
    assert line["attempts"] == 1 and line["latency_ms"] > 0 and line["ttfb_ms"] > 0
    assert line["tokens_in"] > 0 and line["tokens_out"] > 0 and line["client"] == "127.0.0.1"
    assert not any(s in caplog.text or s in sink.getvalue().decode() for s in SECRETS)


async def test_access_log_text_format_and_switch_off(gw: Harness) -> None:
    sink = io.BytesIO()
    gw.gateway.access_log.stream = sink
    await gw.request("GET", "/healthz")
    gw.gateway.access_log.flush()
    text = sink.getvalue().decode()
    assert " INFO router.access: GET /healthz 200  {" in text
    (gw.config_dir / "00-server.yaml").write_text("logging: {access_log: false}\n")
    assert await gw.gateway.reload("test")
    await gw.request("GET", "/healthz")
    gw.gateway.access_log.flush()
    assert sink.getvalue().decode() == text


async def test_every_response_has_a_request_id(gw: Harness) -> None:
    for method, path in [("GET", "/healthz"), ("GET", "/nope"), ("GET", "/v1/chat/completions")]:
        r = await gw.request(method, path)
        assert len(r.headers["X-Request-Id"]) >= 8
        r.release()


async def test_metrics(gw: Harness) -> None:
    await gw.post_json("/v1/chat/completions", CHAT)
    await gw.faults("sim-key-b", {"status": 429, "retry_after": 30})
    await gw.post_json("/v1/chat/completions", CHAT)  # b (429) -> a
    text = await (await gw.request("GET", "/metrics")).text()
    assert ('router_requests_total{client_model="gpt-4o",key="",provider="simulator",route="/v1/chat/completions",'
            'status="200"} 2.0') in text  # key: "" without a key (auth off)
    assert 'router_upstream_attempts_total{outcome="429",provider="simulator"} 1.0' in text
    assert 'router_account_rotations_total{provider="simulator"} 1.0' in text
    assert 'router_upstream_retries_total{provider="simulator"} 1.0' in text
    assert 'router_accounts_cooling{provider="simulator"} 1.0' in text
    assert 'router_tokens_total{direction="in",key="",provider="simulator"}' in text
    assert "router_config_generation 1.0" in text
    assert 'router_config_reloads_total{result="success"} 1.0' in text
    assert 'router_request_duration_seconds_bucket{le="0.5",route="/v1/chat/completions"}' in text
    assert 'router_time_to_first_byte_seconds_count{route="/v1/chat/completions"} 2.0' in text
    assert not any(s in text for s in SECRETS)


async def test_metrics_can_require_a_key(config_dir: Path) -> None:
    routes = config_dir / "30-routes.yaml"
    routes.write_text(routes.read_text().replace("handler: metrics}", "handler: metrics, auth: required}"))
    (config_dir / "00-server.yaml").write_text("auth: {mode: off, api_keys: [{name: m, key: sk-client-secret}]}\n")
    h = await start_gateway(config_dir)
    try:
        assert (await h.request("GET", "/metrics")).status == 401
        assert (await h.request("GET", "/v1/models")).status == 200  # mode off elsewhere
        r = await h.request("GET", "/metrics", headers={"Authorization": "Bearer sk-client-secret"})
        assert r.status == 200
    finally:
        await h.close()


async def test_admin_api_with_separate_admin_key(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text(
        "auth:\n  mode: strict\n  api_keys: [{name: c, key: sk-client-secret}]\n"
        "  admin_keys: [{name: ops, key: sk-admin-secret}]\n")
    h = await start_gateway(config_dir)
    client, admin = {"Authorization": "Bearer sk-client-secret"}, {"Authorization": "Bearer sk-admin-secret"}
    try:
        assert (await h.request("GET", "/admin/accounts", headers=client)).status == 401
        assert (await h.request("GET", "/v1/models", headers=admin)).status == 401  # admin key is not a client key
        await h.faults("sim-key-a", {"status": 429, "retry_after": 40})
        status, _, _ = await h.post_json("/v1/chat/completions", CHAT, headers=client)
        assert status == 200
        r = await h.request("GET", "/admin/accounts", headers=admin)
        text = await r.text()
        accounts = {a["key"]: a for a in json.loads(text)["accounts"]}
        a = accounts["simulator/sim-a@simulator.local"]
        assert a["state"] == "cooling" and a["cooling_until"] > 0 and a["requests"] == 1
        assert a["recent_failures"][0]["reason"] == "429"
        assert accounts["simulator/sim-b@simulator.local"]["state"] == "ok"
        assert not any(s in text for s in SECRETS)
        r = await h.request("POST", "/admin/accounts/sim-a@simulator.local/reset", headers=admin)
        assert r.status == 200 and (await r.json())["reset"] == ["simulator/sim-a@simulator.local"]
        r = await h.request("GET", "/admin/accounts", headers=admin)
        assert {a["key"]: a for a in (await r.json())["accounts"]}[
            "simulator/sim-a@simulator.local"]["state"] == "ok"
        assert (await h.request("POST", "/admin/accounts/nobody/reset", headers=admin)).status == 404
        r = await h.request("GET", "/admin/config", headers=admin)
        text = await r.text()
        assert r.status == 200 and not any(s in text for s in SECRETS)
    finally:
        await h.close()


async def test_sigterm_drains_in_flight_streams(tmp_path: Path) -> None:
    """SIGTERM: stop accepting, let the running stream finish, then exit 0."""
    async with SimServer(port=0, chunks=10, chunk_delay=0.15) as sim:
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        (cfg / "gateway.yaml").write_text(f"""
server: {{shutdown_grace: 10s}}
providers:
  up: {{dialect: gemini, base_url: "{sim.url}", template: t, accounts: [{{email: e, api_key: k}}]}}
model_mapping: {{default: up/gemini-2.5-flash}}
routes: [{{path: /v1/chat/completions, methods: [POST], handler: openai.chat}}, {{path: /healthz, handler: health}}]
templates:
  t:
    url: "{{{{ provider.base_url }}}}/v1beta/models/{{{{ model }}}}:streamGenerateContent"
    query: {{alt: sse}}
    headers: {{x-goog-api-key: "{{{{ account.api_key }}}}"}}
    body: {{contents: "{{{{ request.messages | gemini_contents }}}}"}}
""")
        port = free_port()
        proc = serve_process(cfg, port)
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(url, proc)
            async with aiohttp.ClientSession() as s:
                async with s.post(url + "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                    await r.content.readline()
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.3)
                    with pytest.raises(aiohttp.ClientConnectionError):  # no longer accepting
                        async with aiohttp.ClientSession() as s2:
                            await s2.get(url + "/healthz")
                    rest = await r.content.read()
                assert rest.rstrip().endswith(b"data: [DONE]")
                assert rest.count(b'"content"') >= 9
            code = await asyncio.to_thread(proc.wait, 15)
            assert code == 0, proc.stdout.read().decode() if proc.stdout else ""
        finally:
            stop(proc)


def test_logs_json_format_redacts_nothing_secret_by_construction() -> None:
    rec = logging.LogRecord("router.access", logging.INFO, __file__, 1, "GET / 200", None, None)
    rec.request_id = "r1"
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["msg"] == "GET / 200" and doc["request_id"] == "r1" and doc["level"] == "info"
    assert os.environ.get("NOT_SET_VAR") is None


KEY_IN_URL_CONFIG = """
providers:
  up:
    dialect: gemini
    base_url: "{url}"
    template: t
    accounts: [{{email: a@x, api_key: sk-acct-secret-1}}, {{email: b@x, api_key: sk-acct-secret-2}}]
model_mapping: {{default: up/gemini-2.5-flash}}
routes: [{{path: /v1/chat/completions, methods: [POST], handler: openai.chat}}]
templates:
  t:  # the key in the URL's query string, as Gemini's ?key= does
    url: "{{{{ provider.base_url }}}}/v1beta/models/{{{{ model }}}}:generateContent?key={{{{ account.api_key }}}}"
    body: {{contents: "{{{{ request.messages | gemini_contents }}}}"}}
"""


async def _one_failed_attempt(tmp_path: Path, caplog: pytest.LogCaptureFixture, level: int) -> tuple[str, str]:
    """A request whose first attempt gets a 500 (retried on the other account): (sim URL, log text)."""
    from tests.conftest import FAST_RETRY

    caplog.set_level(level)
    async with SimServer(port=0) as sim:
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        (cfg / "gateway.yaml").write_text(KEY_IN_URL_CONFIG.format(url=sim.url) + FAST_RETRY)
        h = await start_gateway(cfg)
        try:
            await h.session.post(sim.url + "/_sim/faults", json={"key": "sk-acct-secret-1", "faults": [{"status": 500}]})
            status, _, _ = await h.post_json("/v1/chat/completions", CHAT)
            assert status == 200
        finally:
            await h.close()
        return sim.url, caplog.text


async def test_upstream_failure_log_names_method_host_path_never_the_key(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    sim_url, text = await _one_failed_attempt(tmp_path, caplog, logging.INFO)
    failed = [r for r in caplog.records if r.name == "router.engine" and "failed" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].getMessage() == (f"upstream attempt 1 failed: POST {sim_url}/v1beta/models/"
                                      "gemini-2.5-flash:generateContent -> 500 (retrying)")
    assert failed[0].method == "POST" and failed[0].account == "a@x"  # type: ignore[attr-defined]
    assert "sk-acct-secret" not in text and "key=" not in text
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG and r.name == "router.engine"]


async def test_debug_level_logs_every_attempt_url_and_status(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sim_url, text = await _one_failed_attempt(tmp_path, caplog, logging.DEBUG)
    attempts = [r.getMessage() for r in caplog.records if r.name == "router.engine" and r.levelno == logging.DEBUG]
    path = f"{sim_url}/v1beta/models/gemini-2.5-flash:generateContent"
    assert attempts == [f"upstream attempt 1: POST {path} -> 500", f"upstream attempt 2: POST {path} -> 200"]
    assert "sk-acct-secret" not in text and "key=" not in text
