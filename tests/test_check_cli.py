"""`router check`: text (default) and JSON output, exit codes, --placeholder-secrets, --require-keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from router.cli import main
from tests.conftest import MINIMAL_CONFIG, ROOT, ROUTES

SECRETS = ("server: {allow_lan_access: true}\n"
           "auth:\n  mode: all_except_health\n  api_keys: [{name: ci, key: '${ROUTER_CI_KEY_FOR_TEST}'}]\n")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ROUTER_CI_KEY_FOR_TEST", "GEMINI_API_KEY", "GEMINI_API_KEYS", "OPENAI_API_KEY",
                 "ANTHROPIC_API_KEY", "ROUTER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_is_the_default_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            clean_env: None) -> None:
    code, out, _ = run(capsys, str(ROUTES))
    assert code == 0 and out.strip() == f"{ROUTES}: ok (8 file(s))"
    (tmp_path / "10-a.yaml").write_text(MINIMAL_CONFIG + SECRETS)
    code, out, err = run(capsys, str(tmp_path))
    assert code == 1
    assert out.splitlines() == ["10-a.yaml:14:25: at /auth/api_keys/0/key environment variable "
                                "ROUTER_CI_KEY_FOR_TEST is not set (use ${ROUTER_CI_KEY_FOR_TEST:-default})"]
    assert err.strip() == f"1 error(s) in {tmp_path}"


def test_placeholder_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    (tmp_path / "10-a.yaml").write_text(MINIMAL_CONFIG + SECRETS)
    (tmp_path / "20-b.yaml").write_text("providers:\n  q: {dialect: openai, base_url: http://q, template: t, "
                                        "accounts: [{api_key: '${file:missing-secret}'}]}\n")
    assert run(capsys, str(tmp_path))[0] == 1
    code, out, _ = run(capsys, "--placeholder-secrets", str(tmp_path))
    assert code == 0 and "ok" in out


def test_require_keys(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    code, out, _ = run(capsys, "--require-keys", str(ROUTES))
    assert code == 1 and len(out.splitlines()) == 3
    assert "provider 'gemini' has no account with a key" in out and "set GEMINI_API_KEY or GEMINI_API_KEYS" in out
    assert run(capsys, "--require-keys", "--placeholder-secrets", str(ROUTES))[0] == 0


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    code, out, err = run(capsys, "--format", "json", str(ROUTES))
    doc = json.loads(out)
    assert code == 0 and err == ""
    assert doc["ok"] is True and doc["dir"] == str(ROUTES) and doc["errors"] == []
    assert [f["name"] for f in doc["files"]] == sorted(p.name for p in ROUTES.glob("*.yaml"))
    assert all(len(f["sha256"]) == 64 for f in doc["files"])

    (tmp_path / "10-a.yaml").write_text(MINIMAL_CONFIG + SECRETS)
    (tmp_path / "20-b.yaml").write_text("templates:\n  u: {url: '{{ x', body: {}}\n")
    (tmp_path / "10-a.yaml~").write_text("old")
    code, out, err = run(capsys, "--format", "json", str(tmp_path))
    doc = json.loads(out)
    assert code == 1 and err == "" and doc["ok"] is False and doc["ignored"] == ["10-a.yaml~"]
    assert [(e["file"], e["line"], e["column"], e["pointer"]) for e in doc["errors"]] == [
        ("10-a.yaml", 14, 25, "/auth/api_keys/0/key"), ("20-b.yaml", 2, 7, "/templates/u/url")]
    assert "ROUTER_CI_KEY_FOR_TEST is not set" in doc["errors"][0]["message"]
    assert doc["errors"][1]["text"].startswith("20-b.yaml:2:7: at /templates/u/url template syntax error")


def test_empty_dir_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--format", "json", str(tmp_path))
    doc = json.loads(out)
    assert code == 1 and doc["files"] == []
    assert doc["errors"] == [{"file": str(tmp_path), "line": 0, "column": 0, "pointer": "",
                              "message": f"no config files (*.yaml, *.yml) in {tmp_path}",
                              "text": f"{tmp_path}: no config files (*.yaml, *.yml) in {tmp_path}"}]


def test_usage_errors_exit_2() -> None:
    r = subprocess.run([sys.executable, "-m", "router", "check", "--format", "xml", str(ROUTES)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "invalid choice: 'xml'" in r.stderr and r.stdout == ""
    r = subprocess.run([sys.executable, "-m", "router", "check", "--format", "json", "--require-keys",
                        str(ROUTES)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and len(json.loads(r.stdout)["errors"]) == 3


def test_serve_require_keys_refuses_to_start_without_keys(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(ROUTES), "--port", "0",
                        "--require-keys"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert r.returncode == 1, r.stderr
    assert "provider 'openai' has no account with a key (api_key is empty: set OPENAI_API_KEY)" in r.stderr
    assert "refusing to start: 3 config error(s)" in r.stderr


async def test_gateway_require_keys_applies_to_every_reload(tmp_path: Path) -> None:
    from router.errors import ConfigErrors
    from router.gateway import Gateway
    from tests.conftest import copy_routes

    config = copy_routes(tmp_path / "routes.d")
    keys = {"GEMINI_API_KEY": "g", "OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}
    strict = Gateway(config, env={}, require_keys=True)
    with pytest.raises(ConfigErrors) as info:
        await strict.start()
    await strict.close()
    assert len(info.value.errors) == 3
    gw = Gateway(config, env=dict(keys), require_keys=True)
    await gw.start()
    try:
        gw.env = {**keys, "OPENAI_API_KEY": ""}  # a key removed from the environment of a later reload
        assert await gw.reload("test") is False and gw.generation == 1
        assert "provider 'openai'" in gw.last_error.errors[0].message  # type: ignore[union-attr]
    finally:
        await gw.close()
