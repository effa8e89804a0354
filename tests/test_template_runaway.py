"""A runaway template through a running gateway: its request gets a 500 naming the template in
bounded time, other requests are not held up, and template errors never carry a key."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import start_gateway
from tests.serving import free_port, serve_process, stop, wait_healthy

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
SYSTEM_LEAF = 'systemInstruction: "{{ request.system | gemini_system }}"'  # in the shipped gemini template


def with_gemini_leaf(config_dir: Path, leaf: str) -> None:
    """The shipped config, its gemini template's systemInstruction leaf replaced by ``leaf``."""
    path = config_dir / "50-templates.yaml"
    text = path.read_text()
    assert SYSTEM_LEAF in text
    path.write_text(text.replace(SYSTEM_LEAF, f"systemInstruction: {leaf!r}".replace("'", '"'), 1))


async def test_a_runaway_render_holds_up_no_other_request(config_dir: Path) -> None:
    """Two nested range(100000) loops, with an iteration budget too large to stop them: the time
    limit does; meanwhile /healthz answers in well under 100 ms."""
    with_gemini_leaf(config_dir,
                     "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}")
    server = config_dir / "00-server.yaml"
    server.write_text(server.read_text().replace(
        "server:\n",
        "server:\n  template_limits: {max_iterations: 1000000000, max_output_chars: 1000000000, max_time: 2s}\n", 1))
    h = await start_gateway(config_dir)
    try:
        t0 = time.monotonic()
        runaway = asyncio.create_task(h.post_json("/v1/chat/completions", CHAT))
        await asyncio.sleep(0.2)  # the render is under way
        latencies = []
        while not runaway.done() and time.monotonic() - t0 < 10:
            s = time.monotonic()
            async with h.session.get(h.url + "/healthz") as r:
                assert r.status == 200
            latencies.append(time.monotonic() - s)
            await asyncio.sleep(0.02)
        status, doc, _ = await asyncio.wait_for(runaway, 10)
        elapsed = time.monotonic() - t0
    finally:
        await h.close()
    assert status == 500
    assert "template 'gemini'" in doc["error"]["message"] and "longer than 2s" in doc["error"]["message"]
    assert 1.9 < elapsed < 5
    assert len(latencies) >= 10 and max(latencies) < 0.1, latencies


async def test_over_the_default_budget_is_a_quick_500_naming_the_template(config_dir: Path) -> None:
    with_gemini_leaf(config_dir,
                     "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}")
    h = await start_gateway(config_dir)
    try:
        t0 = time.monotonic()
        status, doc, _ = await h.post_json("/v1/chat/completions", CHAT)
        elapsed = time.monotonic() - t0
        ok, _, _ = await h.post_json("/v1/chat/completions", {**CHAT, "model": "claude-x"})  # other templates serve
    finally:
        await h.close()
    assert status == 500 and elapsed < 1.5
    assert "upstream request template 'gemini' failed" in doc["error"]["message"]
    assert "max_iterations" in doc["error"]["message"]
    assert ok == 200


@pytest.mark.parametrize(("leaf", "secret"), [
    ("{{ request.raw[account.api_key] + 1 }}", "sim-key-"),  # the account's key, read by the template
    ("{{ request.raw[request.user] + 1 }}", "client-secret-0123456789"),  # the client's key, sent in the body
    # an attribute of an undefined is undefined too: the ``+`` fails, with the first undefined's message
    ("{{ request.raw[account.api_key].x.y + 1 }}", "sim-key-"),
    # a key transformed at run time is no longer the string redaction looks for
    ("{{ request.raw[account.api_key|upper].x + 1 }}", "SIM-KEY-"),
    ("{{ request.raw[account.api_key[1:]].x + 1 }}", "im-key-"),
    ("{{ request.raw[account.api_key ~ 1].x + 1 }}", "sim-key-"),
    ("{{ request.raw[request.user|upper].x + 1 }}", "CLIENT-SECRET-0123456789"),
    ("{{ request.raw[request.user[2:]].x + 1 }}", "ient-secret-0123456789"),
], ids=["account-key", "client-key", "attribute-chain", "upper", "slice", "concat", "client-upper", "client-slice"])
async def test_template_errors_carry_no_key(config_dir: Path, caplog: pytest.LogCaptureFixture,
                                            leaf: str, secret: str) -> None:
    with_gemini_leaf(config_dir, leaf)
    h = await start_gateway(config_dir)
    try:
        with caplog.at_level(logging.INFO):
            status, doc, _ = await h.post_json(
                "/v1/chat/completions", {**CHAT, "user": "client-secret-0123456789"},
                headers={"Authorization": "Bearer client-secret-0123456789"})
    finally:
        await h.close()
    assert status == 500
    message = doc["error"]["message"]
    assert "template 'gemini'" in message and message.endswith("UndefinedError")  # the type, no values
    assert secret.lower() not in message.lower() and "key" not in message.lower()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "template 'gemini' failed: UndefinedError" in logged
    assert secret.lower() not in logged.lower() and "'…'" in logged


async def test_a_runaway_response_header_template_is_cut_short_and_logged(config_dir: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    (config_dir / "60-headers.yaml").write_text(
        "response_headers:\n  X-Model: '{{ upstream_model }}'\n"
        "  X-Loop: '{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}'\n")
    h = await start_gateway(config_dir)
    try:
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO):
            status, doc, headers = await h.post_json("/v1/chat/completions", CHAT)
        elapsed = time.monotonic() - t0
    finally:
        await h.close()
    assert status == 200 and doc["choices"] and "X-Loop" not in headers and elapsed < 1.5
    assert any("response_headers template failed" in r.getMessage() and "max_iterations" in r.getMessage()
               for r in caplog.records)


def _runaway_config(cfg: Path, body: str, server: str) -> Path:
    """A config dir whose one route renders ``body`` as its upstream request body (the upstream is never
    reached), with ``server`` the flow-style settings of the server section."""
    cfg.mkdir()
    (cfg / "gateway.yaml").write_text(f"""
server: {{{server}}}
providers:
  up: {{dialect: gemini, base_url: "http://127.0.0.1:9", template: t, accounts: [{{email: e, api_key: k}}]}}
model_mapping: {{default: up/m}}
routes: [{{path: /v1/chat/completions, methods: [POST], handler: openai.chat}}, {{path: /healthz, handler: health}}]
templates:
  t: {{url: "{{{{ provider.base_url }}}}/x", body: {{contents: "{body}"}}}}
""")
    return cfg


async def test_sigterm_during_a_runaway_render_exits_promptly(tmp_path: Path) -> None:
    """Today the process freezes in the render and ignores SIGTERM; now the render runs off the event
    loop, so the signal is handled and the process exits once the render's budget ends it."""
    import signal

    import aiohttp

    # Each iteration scans 4 MB: minutes in all; the default budget's time limit (1s) ends it.
    cfg = _runaway_config(tmp_path / "cfg", "{% set s = 'a' * 4000000 %}{% for i in range(99999) %}"
                                            "{{ s.count('b') }}{% endfor %}", "shutdown_grace: 10s")
    port = free_port()
    proc = serve_process(cfg, port)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc)
        async with aiohttp.ClientSession() as s:
            runaway = asyncio.create_task(s.post(url + "/v1/chat/completions", json=CHAT))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            resp = await asyncio.wait_for(runaway, 10)
            status, doc = resp.status, await resp.json()
            code = await asyncio.to_thread(proc.wait, 15)
            elapsed = time.monotonic() - t0
    finally:
        stop(proc, timeout=0)
    assert status == 500 and "template 't'" in doc["error"]["message"] and "longer than 1s" in doc["error"]["message"]
    assert code == 0 and elapsed < 3, (code, elapsed)


@pytest.mark.parametrize("evil", [
    "{% set big = 'y' * 4000000 %}{% for i in range(99999) %}{{ 'zz' in big }}{% endfor %}",
    "{% set big = 'y' * 60000 %}{% for i in range(9999) %}{{ 'zz' in big }}{% endfor %}",  # only time ends it
], ids=["big", "slow"])
async def test_a_runaway_response_header_holds_the_event_loop_under_100ms(
        config_dir: Path, caplog: pytest.LogCaptureFixture, evil: str) -> None:
    """Response headers render on the event loop, on every response: their own budget of 50 ms (and
    small iteration and size limits), whatever server.template_limits says (here: no time limit)."""
    (config_dir / "60-headers.yaml").write_text(f"response_headers:\n  X-Model: '{{{{ upstream_model }}}}'\n"
                                                f"  X-Evil: \"{evil}\"\n")
    server = config_dir / "00-server.yaml"
    server.write_text(server.read_text().replace(
        "server:\n",
        "server:\n  template_limits: {max_iterations: 1000000000, max_output_chars: 1000000000, max_time: 0}\n", 1))
    h = await start_gateway(config_dir)

    async def chats() -> list[tuple[int, dict[str, str]]]:
        results = []
        for _ in range(5):
            status, _, headers = await h.post_json("/v1/chat/completions", CHAT)
            results.append((status, dict(headers)))
        return results

    try:
        with caplog.at_level(logging.INFO):
            traffic = asyncio.create_task(chats())
            latencies = []
            t0 = time.monotonic()
            while not traffic.done() and time.monotonic() - t0 < 20:
                s = time.monotonic()
                async with h.session.get(h.url + "/healthz") as r:
                    assert r.status == 200
                latencies.append(time.monotonic() - s)
                await asyncio.sleep(0.005)
            results = await asyncio.wait_for(traffic, 20)
    finally:
        await h.close()
    assert [status for status, _ in results] == [200] * 5
    assert all("X-Evil" not in headers for _, headers in results)
    assert latencies and max(latencies) < 0.1, latencies
    assert any("response_headers template failed" in r.getMessage() for r in caplog.records)


async def test_shutdown_does_not_wait_for_a_render_without_a_time_limit(tmp_path: Path) -> None:
    """With ``max_time: 0`` and a huge iteration budget only the gateway's stop signal ends a runaway
    render: the process exits right after its shutdown grace, not when the render would end (minutes)."""
    import signal

    import aiohttp

    cfg = _runaway_config(tmp_path / "cfg", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                                            "{% endfor %}",
                          "shutdown_grace: 200ms, template_limits: {max_time: 0, max_iterations: 100000000}")
    port = free_port()
    proc = serve_process(cfg, port)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc)
        async with aiohttp.ClientSession() as s:
            runaway = asyncio.create_task(s.post(url + "/v1/chat/completions", json=CHAT))
            await asyncio.sleep(0.5)  # the render is under way
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                code = None
            elapsed = time.monotonic() - t0
            runaway.cancel()
            await asyncio.gather(runaway, return_exceptions=True)
    finally:
        stop(proc, timeout=0)
    assert code == 0 and elapsed < 1.5, (code, elapsed)
