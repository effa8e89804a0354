"""Keyless providers (local OpenAI-compatible servers): accounts without api_key, no accounts at all,
no empty credential upstream, and the README's tested example."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router.accounts import Account, compile_accounts
from router.registry import template_filters
from router.snapshot import Template, build
from router.templates import compile_tree, make_environment
from router.upstream_request import render_request
from tests.conftest import ROOT, ROUTES, start_gateway

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize(("section", "expected"), [
    ({}, [("local", "local", "")]),  # no accounts, no key_list: one implicit keyless account
    ({"accounts": [{"email": "box@lan"}]}, [("box@lan", "box@lan", "")]),
    ({"accounts": [{"id": "a"}, {"email": "e", "api_key": "k"}]}, [("a", "local-1", ""), ("e", "e", "k")]),
    ({"accounts": [{"email": "e", "api_key": ""}]}, []),  # a key that resolved to "": no key, use fallback
    ({"key_list": ""}, []),
    ({"accounts": []}, []),  # an explicitly empty pool is no account
    ({"key_list": "k1, bob@x=k2"}, [("local-key-1", "local-key-1", "k1"), ("bob@x", "bob@x", "k2")]),
], ids=["no-accounts", "no-api-key-field", "mixed", "empty-key", "empty-key-list", "empty-list", "key-list"])
def test_compile_accounts(section: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    assert [(a.id, a.email, a.api_key) for a in compile_accounts("local", section)] == expected


def _template(headers: dict[str, str]) -> Template:
    env = make_environment(template_filters())
    return Template(name="t", method="POST", url=compile_tree(env, "{{ provider.base_url }}/v1/chat/completions"),
                    query=None, headers=compile_tree(env, headers), body=compile_tree(env, {"model": "{{ model }}"}))


HEADERS = {"Authorization": "{{ account.api_key | bearer }}", "x-api-key": "{{ account.api_key }}",
           "x-goog-api-key": "{{ account.api_key }}", "X-Mixed": "key={{ account.api_key }}"}


@pytest.mark.parametrize(("key", "expected"), [
    ("", {"X-Mixed": "key="}),
    ("sk-1", {"Authorization": "Bearer sk-1", "x-api-key": "sk-1", "x-goog-api-key": "sk-1", "X-Mixed": "key=sk-1"}),
], ids=["keyless", "with-key"])
def test_keyless_account_sends_no_credential_header(key: str, expected: dict[str, str]) -> None:
    account = Account("local", "local", "local", key)
    ctx = {"model": "m", "provider": {"base_url": "http://h"}, "account": account.template_view}
    up = render_request(_template(HEADERS), ctx, "http://h")
    assert {k: v for k, v in up.headers.items() if k not in ("Content-Type", "User-Agent")} == expected


def test_bearer_stays_on_the_template_fast_path() -> None:
    env = make_environment(template_filters())
    node = compile_tree(env, {"Authorization": "{{ account.api_key | bearer }}"}, "h")
    assert not node.jinja, "the leaf fell back to Jinja"
    assert node.render({"account": {"api_key": "k"}}) == {"Authorization": "Bearer k"}
    assert node.render({"account": {"api_key": ""}}) == {}


def test_shipped_openai_templates_use_bearer() -> None:
    snap, _ = build(ROUTES, 1, template_filters(), env={"OPENAI_API_KEY": "sk-x"})
    openai = snap.providers["openai"]
    account = openai.pool.accounts[0]
    for template in (openai.template, *openai.inbound_templates.values()):
        ctx = {"model": "gpt-x", "stream": False, "request": {"raw": {"model": "a"}, "messages": []},
               "provider": openai.template_view, "account": account.template_view}
        up = render_request(template, ctx, openai.base_url)
        assert up.headers["Authorization"] == "Bearer sk-x", template.name
        ctx["account"] = Account("openai", "o", "o", "").template_view
        assert "Authorization" not in render_request(template, ctx, openai.base_url).headers


def _readme_local_example() -> str:
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", README, re.DOTALL) if "11434" in b]
    assert len(blocks) == 1, "README has one local OpenAI-compatible server example"
    return blocks[0]


def test_readme_local_example_says_base_url_excludes_v1() -> None:
    block = _readme_local_example()
    assert "/v1" not in block.split("base_url:")[1].split("#")[0]
    assert "base_url` is the server's root and excludes `/v1`" in README


async def test_readme_local_server_example_serves_without_a_key(tmp_path: Path) -> None:
    """The README example, with base_url pointed at a tiny OpenAI-compatible server that records
    what reached it: a chat request goes through the gateway with no Authorization header."""
    seen: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"path": request.path, "headers": dict(request.headers), "body": body})
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello from the local server"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = tmp_path / "routes.d"
    shutil.copytree(ROUTES, config)
    block = _readme_local_example().replace("http://127.0.0.1:11434", f"http://127.0.0.1:{port}")
    (config / "70-local.yaml").write_text(block)
    h = await start_gateway(config)
    try:
        status, doc, headers = await h.post_json(
            "/v1/chat/completions", {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200, doc
        assert doc["choices"][0]["message"]["content"] == "hello from the local server"
        assert headers["X-Account-Email"] == "local"
        assert len(seen) == 1 and seen[0]["path"] == "/v1/chat/completions"
        assert seen[0]["body"]["model"] == "llama3.2"
        sent = {k.lower() for k in seen[0]["headers"]}
        assert not sent & {"authorization", "x-api-key", "x-goog-api-key"}, seen[0]["headers"]
    finally:
        await h.close()
        await runner.cleanup()
