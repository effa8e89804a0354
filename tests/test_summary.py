"""The start-up summary: per provider live or SIMULATED (and why), the auth mode in effect (and why)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from router.config import load_dir
from router.registry import template_filters
from router.snapshot import compile_config
from router.summary import describe
from tests.conftest import start_gateway

SECRETS = ("sk-gem-one", "sk-gem-two", "sk-literal-xyz", "hunter2", "q-secret")


def _summary(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "router.gateway"
            and r.getMessage().startswith(("provider ", "auth: "))]


async def test_shipped_config_without_keys_says_simulated_and_why(config_dir: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    h = await start_gateway(config_dir, env={})
    try:
        lines = _summary(caplog)
        assert "provider gemini: SIMULATED via simulator (no account has a key: set GEMINI_API_KEY or "\
               "GEMINI_API_KEYS)" in lines
        assert "provider openai: SIMULATED via sim-openai (no account has a key: set OPENAI_API_KEY)" in lines
        assert "provider simulator: SIMULATED (base_url builtin:simulator), 2 account(s)" in lines
        assert any(line.startswith("auth: off (auto: listening on 127.0.0.1, loopback-only); 0 client key(s)")
                   for line in lines), lines
        gemini = next(r for r in caplog.records if r.getMessage().startswith("provider gemini:"))
        assert gemini.levelno == logging.WARNING and gemini.state == "simulated"  # type: ignore[attr-defined]
    finally:
        await h.close()


async def test_live_provider_names_host_and_accounts_never_keys(config_dir: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"GEMINI_API_KEYS": "a@x.com=sk-gem-one,sk-gem-two",
           "GEMINI_BASE_URL": "http://user:hunter2@up.example:9000/base?key=q-secret"}
    h = await start_gateway(config_dir, env=env)
    try:
        assert "provider gemini: live at http://up.example:9000/base, 2 account(s)" in _summary(caplog)
        assert not any(s in caplog.text for s in SECRETS)
    finally:
        await h.close()


async def test_reload_logs_the_summary_only_when_it_changes(config_dir: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    h = await start_gateway(config_dir, env={})
    try:
        caplog.clear()
        assert await h.gateway.reload("test")
        assert _summary(caplog) == []  # nothing changed: no repeat
        providers = config_dir / "10-providers.yaml"
        providers.write_text(providers.read_text().replace('"${OPENAI_API_KEY:-}"', "sk-literal-xyz"))
        assert await h.gateway.reload("test")
        lines = _summary(caplog)
        assert "provider openai: live at https://api.openai.com, 1 account(s)" in lines
        assert any(line.startswith("provider gemini: SIMULATED via simulator") for line in lines)  # the whole picture
        assert not any(s in caplog.text for s in SECRETS)
    finally:
        await h.close()


async def test_a_workers_child_other_than_the_first_logs_it_at_debug(config_dir: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    from router.gateway import Gateway
    from router.runner import GatewayRunner

    caplog.set_level(logging.DEBUG)
    runner = GatewayRunner(Gateway(config_dir, env={}, announce=False), watch=False)
    await runner.setup()
    try:
        records = [r for r in caplog.records if r.getMessage().startswith(("provider ", "auth: "))]
        assert records and {r.levelno for r in records} == {logging.DEBUG}
    finally:
        await runner.cleanup()


def _describe(tmp_path: Path, yaml: str, bind_host: str | None = None, env: dict[str, str] | None = None) -> list[str]:
    (tmp_path / "c.yaml").write_text(yaml)
    loaded = load_dir(tmp_path, env or {})
    snap = compile_config(loaded, 1, template_filters(), {}, bind_host)
    return [line.message for line in describe(snap, loaded, bind_host)]


BASE = """
templates:
  t: {url: "{{ provider.base_url }}/v1/chat", body: {model: "{{ model }}"}}
routes:
  - {path: /v1/chat/completions, methods: [POST], handler: openai.chat}
"""


def test_hints_come_from_the_config_variables_and_files(tmp_path: Path) -> None:
    (tmp_path / "empty-key.txt").write_text("\n")
    lines = _describe(tmp_path, BASE + """
providers:
  up:
    dialect: openai
    base_url: http://up.example
    template: t
    accounts: [{email: a, api_key: "${file:empty-key.txt}"}, {email: b, api_key: "${KEY_B:-}"}]
    fallback: other
  other: {dialect: openai, base_url: "http://other.example:81/v1", template: t, accounts: [{email: o, api_key: k}]}
  bare: {dialect: openai, base_url: http://bare.example, template: t, accounts: []}
""", env={})
    assert lines[0] == ("provider up: live via fallback other at http://other.example:81/v1, 1 account(s) "
                        "(no account has a key: set KEY_B or put a key in empty-key.txt)")
    assert lines[2] == ("provider bare: UNAVAILABLE (no account has a key: give providers.bare accounts with an "
                        "api_key or a key_list; no fallback with an account): requests mapped to it fail with 503")


def test_auth_line_says_why_and_warns_when_exposed_without_auth(tmp_path: Path) -> None:
    provider = """
providers:
  up: {dialect: openai, base_url: http://up.example, template: t, accounts: [{email: a, api_key: k}]}
"""
    lines = _describe(tmp_path, BASE + provider + "auth: {api_keys: [{name: c, key: ck}]}\n", "0.0.0.0")
    assert lines[-1] == ("auth: all_except_health (auto: listening on 0.0.0.0, not loopback-only); 1 client key(s), "
                         "no admin keys: admin endpoints take a client key")
    lines = _describe(tmp_path, BASE + provider + "auth: {mode: off}\nserver: {allow_lan_access: true}\n")
    assert lines[-1] == ("auth: off (auth.mode: off); 0 client key(s), no admin keys: admin endpoints open; "
                         "anyone who can reach 0.0.0.0 can use the gateway")
    lines = _describe(tmp_path, BASE + provider + "auth:\n  mode: strict\n  api_keys: [{name: c, key: ck}]\n"
                      "  admin_keys: [{name: o, key: ok}]\n")
    assert lines[-1] == ("auth: strict (auth.mode: strict); 1 client key(s), admin endpoints need one of "
                         "1 admin key(s)")
