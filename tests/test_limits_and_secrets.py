"""Body reading, auth exposure, per-key Responses store, secret-free errors, client-input bounds."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from router.accounts import compile_accounts
from router.config import load_dir
from router.errors import ConfigErrors
from router.registry import template_filters
from router.snapshot import compile_config
from router.templates import compile_tree, make_environment, render_tree
from tests.conftest import Harness, start_gateway

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


async def test_large_chunked_body_is_read_whole(gw: Harness) -> None:
    import orjson

    body = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 400_000 + " end"}]})

    async def pieces():
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    async with gw.session.post(gw.url + "/v1/chat/completions", data=pieces(),
                               headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()
    sent = (await gw.sim_requests())[-1]["body"]
    assert sent["contents"][0]["parts"][0]["text"].endswith(" end")


async def test_chunked_body_over_the_limit_is_413(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text("server: {max_body_bytes: 50000}\n")
    h = await start_gateway(config_dir)
    try:
        async def pieces():
            for _ in range(20):
                yield b"x" * 8192

        async with h.session.post(h.url + "/v1/chat/completions", data=pieces()) as r:
            assert r.status == 413
    finally:
        await h.close()


@pytest.mark.parametrize("server,bind_host", [
    ("server: {host: 0.0.0.0}\n", None), ("server: {}\n", "0.0.0.0"), ("server: {allow_lan_access: true}\n", None),
], ids=["config-host", "cli-host", "lan-flag"])
def test_auto_auth_refuses_an_open_non_loopback_listener(tmp_path: Path, server: str, bind_host: str | None) -> None:
    (tmp_path / "a.yaml").write_text(server + "auth: {mode: auto}\nroutes: [{path: /healthz, handler: health}]\n")
    with pytest.raises(ConfigErrors) as e:
        compile_config(load_dir(tmp_path, env={}), 1, template_filters(), bind_host=bind_host)
    assert "needs at least one api key" in str(e.value)


async def test_responses_are_private_to_the_key_that_made_them(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text(
        "auth: {mode: strict, api_keys: [{name: a, key: sk-a}, {name: b, key: sk-b}]}\n")
    h = await start_gateway(config_dir)
    try:
        a = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-a", max_retries=0)
        b = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-b", max_retries=0)
        first = await a.responses.create(model="gpt-4o", input="secret plan")
        assert first.id.startswith("resp_") and len(first.id) >= 29
        await a.responses.create(model="gpt-4o", input="go on", previous_response_id=first.id)
        with pytest.raises(openai.NotFoundError):
            await b.responses.create(model="gpt-4o", input="tell me", previous_response_id=first.id)
        await a.close()
        await b.close()
    finally:
        await h.close()


def test_schema_errors_never_quote_secret_values(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "auth:\n  api_keys: ['${ROUTER_SECRET}']\n"
        "providers:\n  p: {dialect: gemini, base_url: 'http://x', template: t, accounts: ['${UPSTREAM_SECRET}']}\n"
        "templates: {t: {url: x, body: {}}}\n")
    with pytest.raises(ConfigErrors) as e:
        compile_config(load_dir(tmp_path, env={"ROUTER_SECRET": "sk-live-123", "UPSTREAM_SECRET": "AIza-456"}),
                       1, template_filters())
    text = str(e.value)
    assert "/auth/api_keys/0" in text and "/providers/p/accounts/0" in text
    assert "sk-live-123" not in text and "AIza-456" not in text


def test_key_list_keys_may_contain_equals_signs() -> None:
    accounts = compile_accounts("p", {"key_list": "c2stbGl2ZQ==, alice@x.com=k=1"})
    assert [(a.email, a.api_key) for a in accounts] == [("p-key-1", "c2stbGl2ZQ=="), ("alice@x.com", "k=1")]


def test_non_finite_numbers_in_templates_render() -> None:
    env = make_environment(template_filters())
    out = render_tree(compile_tree(env, {"a": float("inf"), "b": "{{ 1e999 }}"}), {})
    assert out["a"] == float("inf") and out["b"] == float("inf")


async def test_overlong_model_names_are_refused(gw: Harness) -> None:
    status, doc, _ = await gw.post_json("/v1/chat/completions", {**CHAT, "model": "m" * 300})
    assert status == 400 and doc["error"]["param"] == "model"


async def test_a_model_that_escapes_the_url_is_the_clients_error(gw: Harness) -> None:
    status, doc, _ = await gw.post_json("/v1/chat/completions", {**CHAT, "model": "gemini-/../../x"})
    assert status == 400 and doc["error"]["param"] == "model"
    assert await gw.sim_requests() == []


async def test_a_cooled_account_is_not_retried_when_the_rule_does_not_rotate(config_dir: Path) -> None:
    (config_dir / "40-retry.yaml").write_text(
        "retry_policies:\n  default:\n    max_attempts: 3\n    rules:\n"
        "      - {on: [503], rotate: false, cooldown: 30s, wait: 10ms}\n")
    h = await start_gateway(config_dir)
    try:
        await h.faults("sim-key-a", {"status": 503})
        status, _, headers = await h.post_json("/v1/chat/completions", CHAT)
        assert status == 200 and headers["X-Account-Email"] == "sim-b@simulator.local"
        assert [r["key"] for r in await h.sim_requests()] == ["sim-key-a", "sim-key-b"]
    finally:
        await h.close()
