"""The HTTP surface of the foundation: health, models, 404/405, auth modes, model mapping errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Harness, start_gateway


async def test_healthz(gw: Harness) -> None:
    r = await gw.request("GET", "/healthz")
    body = await r.json()
    assert r.status == 200
    assert body["status"] == "ok" and body["config_generation"] == 1 and body["version"]


async def test_models_list_and_get(gw: Harness) -> None:
    r = await gw.request("GET", "/v1/models")
    body = await r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "gpt-4o" in ids and "gemini-2.5-flash" in ids  # exact key and provider model
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
    one = await (await gw.request("GET", "/v1/models/gpt-4o")).json()
    assert one == {"id": "gpt-4o", "object": "model", "created": one["created"], "owned_by": "gemini"}


async def test_unknown_path_lists_routes(gw: Harness) -> None:
    r = await gw.request("GET", "/v2/nothing")
    body = await r.json()
    assert r.status == 404
    assert "/v1/chat/completions" in body["error"]["message"]
    assert body["error"]["type"] == "not_found_error"


async def _not_found(h: Harness, headers: dict[str, str] | None = None) -> str:
    r = await h.request("GET", "/v2/nothing", headers=headers or {})
    assert r.status == 404
    return (await r.json())["error"]["message"]


async def test_404_lists_only_the_routes_the_caller_could_use(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text(
        "auth:\n  mode: all_except_health\n  api_keys: [{name: c, key: sk-client}]\n"
        "  admin_keys: [{name: ops, key: sk-admin}]\n")
    h = await start_gateway(config_dir)
    try:
        for headers in (None, {"Authorization": "Bearer wrong"}):  # no valid key: what needs none
            message = await _not_found(h, headers)
            assert "GET /healthz" in message and "/admin" not in message, message
            assert "/v1/chat/completions" not in message and "/metrics" not in message
            assert "need a key you did not send are not listed" in message
        message = await _not_found(h, {"Authorization": "Bearer sk-client"})
        assert "POST /v1/chat/completions" in message and "GET /healthz" in message
        assert "/admin" not in message, message
        message = await _not_found(h, {"x-api-key": "sk-admin"})  # an admin key is not a client key
        assert "GET /admin/config" in message and "POST /admin/reload" in message
        assert "/v1/chat/completions" not in message
    finally:
        await h.close()


async def test_404_under_strict_auth_without_a_key_lists_nothing(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text("auth: {mode: strict, api_keys: [{name: c, key: sk-client}]}\n")
    h = await start_gateway(config_dir)
    try:
        message = await _not_found(h)
        # only the routes that need no key: the status page's shell (it holds no data, see router.status)
        assert message == ("No route for GET /v2/nothing. Routes that exist: GET /status; GET /status/{asset}. "
                           "Routes that need a key you did not send are not listed."), message
        message = await _not_found(h, {"Authorization": "Bearer sk-client"})  # no admin keys: client keys
        assert "GET /admin/config" in message and "not listed" not in message, message
    finally:
        await h.close()


async def test_405_names_methods_only_to_a_caller_who_could_use_the_route(config_dir: Path) -> None:
    """A 405's Allow header would confirm an admin route exists: without the key it is a 404."""
    (config_dir / "00-server.yaml").write_text(
        "auth:\n  mode: all_except_health\n  api_keys: [{name: c, key: sk-client}]\n"
        "  admin_keys: [{name: ops, key: sk-admin}]\n")
    h = await start_gateway(config_dir)
    try:
        for headers in ({}, {"Authorization": "Bearer sk-client"}):
            r = await h.request("DELETE", "/admin/config", headers=headers)
            assert r.status == 404 and "Allow" not in r.headers, (r.status, dict(r.headers))
            message = (await r.json())["error"]["message"]
            assert "GET /admin" not in message and "HEAD" not in message, message
        r = await h.request("DELETE", "/admin/config", headers={"x-api-key": "sk-admin"})
        assert r.status == 405 and "GET" in r.headers["Allow"]
        r = await h.request("GET", "/v1/chat/completions", headers={"Authorization": "Bearer sk-client"})
        assert r.status == 405
    finally:
        await h.close()


async def test_wrong_method_is_405_with_allow(gw: Harness) -> None:
    r = await gw.request("GET", "/v1/chat/completions")
    assert r.status == 405
    assert r.headers["Allow"] == "POST"
    assert "POST" in (await r.json())["error"]["message"]


@pytest.mark.parametrize("path,body,check", [
    ("/v1/chat/completions", {"model": "m", "messages": []},
     lambda b: b["error"]["type"] == "authentication_error"),
    ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": []},
     lambda b: b["type"] == "error" and b["error"]["type"] == "authentication_error"),
    ("/v1beta/models/gemini-2.5-flash:generateContent", {"contents": []},
     lambda b: b["error"]["status"] == "UNAUTHENTICATED" and b["error"]["code"] == 401),
], ids=["openai", "anthropic", "gemini"])
async def test_401_in_callers_dialect(tmp_path: Path, config_dir: Path, path: str, body: dict, check) -> None:
    (config_dir / "00-server.yaml").write_text(
        "server: {port: 8045}\nauth:\n  mode: strict\n  api_keys:\n    - {name: a, key: sk-a}\n    - {name: b, key: sk-b}\n")
    h = await start_gateway(config_dir)
    try:
        status, doc, _ = await h.post_json(path, body)
        assert status == 401 and check(doc), doc
        status, doc, _ = await h.post_json(path, body, headers={"Authorization": "Bearer wrong"})
        assert status == 401 and check(doc), doc
        r = await h.request("GET", "/healthz")
        assert r.status == 401  # strict: health too
    finally:
        await h.close()


@pytest.mark.parametrize("header", [
    {"Authorization": "Bearer sk-b"}, {"x-api-key": "sk-b"}, {"x-goog-api-key": "sk-a"},
], ids=["bearer", "x-api-key", "x-goog-api-key"])
async def test_key_headers_accepted(config_dir: Path, header: dict) -> None:
    (config_dir / "00-server.yaml").write_text(
        "auth:\n  mode: all_except_health\n  api_keys:\n    - {name: a, key: sk-a}\n    - {name: b, key: sk-b}\n")
    h = await start_gateway(config_dir)
    try:
        assert (await h.request("GET", "/healthz")).status == 200  # health exempt
        assert (await h.request("GET", "/v1/models")).status == 401
        assert (await h.request("GET", "/v1/models", headers=header)).status == 200
    finally:
        await h.close()


async def test_auto_mode_is_off_on_loopback(gw: Harness) -> None:
    assert (await gw.request("GET", "/v1/models")).status == 200


@pytest.mark.parametrize("path,body,check", [
    ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
     lambda b: b["error"]["code"] == "model_not_found" and b["error"]["param"] == "model"),
    ("/v1/messages", {"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     lambda b: b["error"]["type"] == "not_found_error" and "nope" in b["error"]["message"]),
    ("/v1beta/models/nope:generateContent", {"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
     lambda b: b["error"]["status"] == "NOT_FOUND"),
], ids=["openai", "anthropic", "gemini"])
async def test_model_not_found_in_callers_dialect(config_dir: Path, path: str, body: dict, check) -> None:
    (config_dir / "20-mapping.yaml").write_text("model_mapping:\n  exact: {gpt-4o: gemini/gemini-2.5-flash}\n")
    h = await start_gateway(config_dir)
    try:
        status, doc, _ = await h.post_json(path, body)
        assert status == 404 and check(doc), doc
    finally:
        await h.close()


@pytest.mark.parametrize("model,mapped", [
    ("gpt-4o", "gemini-2.5-flash"),          # exact
    ("gemini-2.0-pro", "gemini-2.0-pro"),    # wildcard with * substitution
    ("something-else", "gemini-2.5-flash"),  # default
], ids=["exact", "wildcard", "default"])
async def test_mapping_reaches_upstream(gw: Harness, model: str, mapped: str) -> None:
    status, doc, headers = await gw.post_json(
        "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200, doc
    assert headers["X-Mapped-Model"] == mapped
    assert doc["model"] == model  # the client sees the name it asked for
    seen = await gw.sim_requests()
    assert seen[-1]["model"] == mapped


async def test_bad_json_is_400_naming_the_problem(gw: Harness) -> None:
    r = await gw.request("POST", "/v1/chat/completions", data=b"{nope")
    body = await r.json()
    assert r.status == 400 and "JSON" in body["error"]["message"]
    status, doc, _ = await gw.post_json("/v1/chat/completions", {"model": "gpt-4o"})
    assert status == 400 and doc["error"]["param"] == "messages"


async def test_body_over_limit_is_413(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text("server: {max_body_bytes: 1000}\n")
    h = await start_gateway(config_dir)
    try:
        status, doc, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": [
            {"role": "user", "content": "x" * 5000}]})
        assert status == 413 and doc["error"]["message"].startswith("request body exceeds")
    finally:
        await h.close()


async def test_admin_config_reports_files_without_secrets(config_dir: Path) -> None:
    h = await start_gateway(config_dir, env={"GEMINI_API_KEY": "AIza-secret-value"})
    try:
        r = await h.request("GET", "/admin/config")
        text = await r.text()
        body = await r.json()
        assert r.status == 200
        assert body["generation"] == 1 and body["last_error"] is None
        assert {f["name"] for f in body["files"]} >= {"10-providers.yaml", "30-routes.yaml"}
        assert all(len(f["sha256"]) == 64 for f in body["files"])
        assert "AIza-secret-value" not in text and "sim-key-a" not in text
    finally:
        await h.close()


def test_every_handler_name_a_route_may_use_is_implemented() -> None:
    from router.registry import ENDPOINTS
    from router.snapshot import HANDLERS

    assert set(HANDLERS) == set(ENDPOINTS)
    for endpoint in ENDPOINTS.values():  # a proxy or token-count endpoint carries its codec
        assert callable(endpoint.run)
        if endpoint.codec is not None:
            assert endpoint.family is endpoint.codec.family


@pytest.mark.parametrize("path,body", [
    ("/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions/responses", {"model": "gpt-4o", "input": "hi"}),
    ("/responses", {"model": "gpt-4o", "input": "hi"}),
    ("/completions", {"model": "gpt-4o", "prompt": "hi"}),
    ("/messages", {"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
], ids=["no-v1-chat", "stacked-responses", "no-v1-responses", "no-v1-completions", "no-v1-messages"])
async def test_shipped_aliases_for_clients_that_stack_or_drop_path_parts(gw: Harness, path: str, body: dict) -> None:
    status, doc, _ = await gw.post_json(path, body)
    assert status == 200, doc
    assert (await gw.request("GET", "/models")).status == 200


async def test_a_config_that_does_not_load_leaves_nothing_open(config_dir: Path) -> None:
    from router.errors import ConfigErrors
    from router.gateway import Gateway
    from router.runner import GatewayRunner

    (config_dir / "20-mapping.yaml").write_text("model_mapping: [not, a, mapping]\n")
    gateway = Gateway(config_dir, env={})
    runner = GatewayRunner(gateway, watch=False)
    with pytest.raises(ConfigErrors):
        await runner.setup()
    assert gateway.session is None and gateway.sim is None  # closed, not leaked
    await runner.cleanup()  # still safe to call


async def _raw_exchange(h: Harness, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(h.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def test_expect_100_continue_is_answered_before_the_body(gw: Harness) -> None:
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    reader, writer = await _raw_exchange(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                             b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    try:
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)  # curl waits 1 s for this
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def test_an_unknown_expectation_is_417_in_the_callers_dialect(gw: Harness) -> None:
    status, doc, _ = await gw.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": []},
                                        headers={"Expect": "something-else"})
    assert status == 417 and "Expect" in doc["error"]["message"]


async def test_idle_client_connections_close_after_75_seconds(gw: Harness) -> None:
    from router.runner import KEEPALIVE_TIMEOUT

    assert KEEPALIVE_TIMEOUT == 75.0
    assert gw.runner.server is not None
    assert gw.runner.server().keepalive_timeout == KEEPALIVE_TIMEOUT  # not aiohttp's 3630 s default
