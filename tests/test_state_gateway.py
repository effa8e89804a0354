"""``state: {backend: redis}`` in whole gateways (in-process, one real redis-server with a password):
stored responses continue on another gateway, an outage is a clear 4xx, the password shows nowhere,
the backend can be switched by a reload."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.cli import main
from tests.conftest import Harness, copy_routes, start_gateway
from tests.redis_server import RedisServer, server_fixture

PASSWORD = "s3cret-redis-pass"  # noqa: S105  # a test password, the one secret these tests look for


server = server_fixture("--requirepass", PASSWORD)


def state_yaml(port: int, backend: str = "redis") -> str:
    return (f"state: {{backend: {backend}, url: 'redis://:${{REDIS_PASSWORD}}@127.0.0.1:{port}/0', "
            "prefix: gw-test, sync_interval: 200ms}\n")


@pytest.fixture
async def pair(tmp_path: Path, server: RedisServer) -> AsyncIterator[tuple[Harness, Harness]]:
    if server.process is None:
        server.start()
    gateways = []
    for name in ("a", "b"):
        config = copy_routes(tmp_path / name)
        (config / "05-state.yaml").write_text(state_yaml(server.port))
        gateways.append(await start_gateway(config, env={"REDIS_PASSWORD": PASSWORD}))
    yield gateways[0], gateways[1]
    for gw in gateways:
        await gw.close()


async def turn(gw: Harness, text: str, previous: str | None = None) -> tuple[int, dict]:
    body = {"model": "gpt-4o-mini", "input": text, **({"previous_response_id": previous} if previous else {})}
    status, doc, _ = await gw.post_json("/v1/responses", body)
    return status, doc


async def test_a_conversation_continues_on_the_other_gateway(pair: tuple[Harness, Harness]) -> None:
    a, b = pair
    previous = None
    for i in range(6):
        status, doc = await turn((a, b)[i % 2], f"turn {i}", previous)
        assert status == 200, doc
        previous = doc["id"]
    sent = json.dumps((await b.sim_requests())[-1]["body"])  # the last turn, through b: the whole history
    assert all(f"turn {i}" in sent for i in range(6)), sent


async def test_an_unknown_response_during_an_outage_is_a_clear_404(
        pair: tuple[Harness, Harness], server: RedisServer) -> None:
    a, b = pair
    status, doc = await turn(a, "hello")
    assert status == 200
    server.stop()
    try:
        status, missing = await turn(b, "again", doc["id"])  # stored by a, unreadable now
        assert status == 404, missing
        error = missing["error"]
        assert error["code"] == "previous_response_not_found" and error["param"] == "previous_response_id"
        assert "shared state store is unreachable" in error["message"]
        status, doc2 = await turn(a, "again", doc["id"])  # a still holds its own
        assert status == 200, doc2
        for _ in range(50):  # the next sync (every 200 ms here) says it is down
            metrics = await (await b.request("GET", "/metrics")).text()
            if 'router_state_backend_up{backend="redis"} 0.0' in metrics:
                break
            await asyncio.sleep(0.05)
        assert 'router_state_backend_up{backend="redis"} 0.0' in metrics
    finally:
        server.start()


async def test_the_password_shows_nowhere(pair: tuple[Harness, Harness], server: RedisServer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a, _ = pair
    await turn(a, "hi")
    seen = []
    for path in ("/admin/config", "/admin/accounts", "/metrics", "/healthz"):
        async with await a.request("GET", path) as r:
            seen.append(await r.text())
    config = (await (await a.request("GET", "/admin/config")).json())["state"]
    assert config["backend"] == "redis" and config["up"] is True
    assert config["address"] == f"redis://127.0.0.1:{server.port}/0"
    assert all(PASSWORD not in text for text in seen)
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


async def test_a_reload_switches_the_backend(tmp_path: Path, server: RedisServer) -> None:
    if server.process is None:
        server.start()
    config = copy_routes(tmp_path / "c")
    gw = await start_gateway(config, env={"REDIS_PASSWORD": PASSWORD})
    try:
        assert gw.gateway.shared is None  # memory: nothing opened
        (config / "05-state.yaml").write_text(state_yaml(server.port))
        assert await gw.gateway.reload("test")
        first = gw.gateway.shared
        assert first is not None and gw.gateway.stores.remote is first
        assert gw.gateway.stores.responses is not None and gw.gateway.stores.responses.remote is first
        assert await gw.gateway.reload("unchanged")
        assert gw.gateway.shared is first  # same settings: the same connection
        (config / "05-state.yaml").write_text(state_yaml(server.port, "memory"))
        assert await gw.gateway.reload("test")
        assert gw.gateway.shared is None and gw.gateway.stores.responses.remote is None
    finally:
        await gw.close()


def test_check_says_redis_needs_its_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = copy_routes(tmp_path / "c")
    (config / "05-state.yaml").write_text("state: {backend: redis, url: 'redis://127.0.0.1:1/0'}\n")
    assert main(["check", str(config)]) == 0
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "redis" else real(name, *a))
    capsys.readouterr()
    assert main(["check", str(config)]) == 1
    assert "05-state.yaml:1:9: at /state/backend backend 'redis' needs redis-py" in capsys.readouterr().out
    (config / "05-state.yaml").write_text("state: {backend: redis}\n")  # no url
    monkeypatch.undo()
    assert main(["check", str(config)]) == 1
    assert "'url' is a required property" in capsys.readouterr().out


async def test_a_sticky_session_keeps_its_account_on_the_other_gateway(tmp_path: Path, server: RedisServer) -> None:
    if server.process is None:
        server.start()
    gateways = []
    for name in ("a", "b"):
        config = copy_routes(tmp_path / name)
        providers = config / "10-providers.yaml"
        text = providers.read_text()
        providers.write_text(text.replace("    base_url: builtin:simulator\n    template: {default: gemini,",
                                          "    base_url: builtin:simulator\n    scheduling: sticky\n"
                                          "    template: {default: gemini,", 1))
        (config / "05-state.yaml").write_text(state_yaml(server.port))
        gateways.append(await start_gateway(config, env={"REDIS_PASSWORD": PASSWORD}))
    a, b = gateways
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    try:
        sessions = [f"s{i}" for i in range(4)]
        on_a = {}
        for s in sessions:  # round robin binds them A, B, A, B
            status, _, headers = await a.post_json("/v1/chat/completions", body, headers={"x-session-id": s})
            assert status == 200
            on_a[s] = headers["X-Account-Email"]
        assert len(set(on_a.values())) == 2
        for s in reversed(sessions):  # b's own round robin would give the opposite account to each
            status, _, headers = await b.post_json("/v1/chat/completions", body, headers={"x-session-id": s})
            assert status == 200 and headers["X-Account-Email"] == on_a[s], s
    finally:
        for gw in gateways:
            await gw.close()


def test_check_rejects_a_url_redis_cannot_parse_without_echoing_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = copy_routes(tmp_path / "c")
    (config / "05-state.yaml").write_text("state: {backend: redis, url: 'redis://:pa55word@host:port/0'}\n")
    assert main(["check", str(config)]) == 1
    out = capsys.readouterr().out
    assert "05-state.yaml:1" in out and "/state/url not a Redis URL" in out and "pa55word" not in out


def test_a_mistyped_scheme_is_rejected_without_echoing_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = copy_routes(tmp_path / "c")
    (config / "05-state.yaml").write_text("state: {backend: redis, url: '${REDIS_URL}'}\n")
    monkeypatch.setenv("REDIS_URL", "redis:/:TopSecretPW@10.0.0.5:6379/0")
    assert main(["check", str(config)]) == 1
    out = capsys.readouterr()
    assert "/state/url not a Redis URL" in out.out and "TopSecretPW" not in out.out + out.err


def test_check_rejects_a_lease_ttl_its_renewals_cannot_keep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = copy_routes(tmp_path / "c")
    (config / "05-state.yaml").write_text(
        "state: {backend: redis, url: 'redis://127.0.0.1:6379/0', sync_interval: 2s, lease_ttl: 5s}\n")
    assert main(["check", str(config)]) == 1
    out = capsys.readouterr().out
    assert "/state/lease_ttl lease_ttl (5s) must be at least 3 times sync_interval (2s)" in out, out
    (config / "05-state.yaml").write_text(
        "state: {backend: redis, url: 'redis://127.0.0.1:6379/0', sync_interval: 2s, lease_ttl: 6s}\n")
    assert main(["check", str(config)]) == 0
