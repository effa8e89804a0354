"""``router diff OLD NEW``: what a config change means for clients, as text and Markdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import main
from tests.conftest import ROUTES, copy_routes


def edit(path: Path, *pairs: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)


@pytest.fixture
def changed(tmp_path: Path) -> Path:
    """The shipped config with one change of every kind."""
    d = copy_routes(tmp_path / "new")
    edit(d / "20-mapping.yaml", ("gpt-4o: gemini/gemini-2.5-flash", "gpt-4o: openai/gpt-4o"),
         ("    gpt-4.1: gemini/gemini-2.5-pro\n", "    gpt-5: openai/gpt-5\n"),
         ('"o*": openai/o*', '"o*": openai/o*\n    "mistral-*": openai/mistral-*'),
         ('"claude-*": anthropic/claude-*', '"claude-*": anthropic/claude-*-latest'),
         ("default: gemini/gemini-2.5-flash", "default: gemini/gemini-2.5-pro"))
    edit(d / "00-server.yaml", ("  mode: auto ", "  mode: strict"),
         ('    - {name: default, key: "${ROUTER_API_KEY:-}"}',
          '    - {name: default, key: "${ROUTER_API_KEY:-}", models: [gpt-4o], limits: {rpm: 10}}\n'
          '    - {name: ci, key: "${CI_KEY_NEVER_SET}", team: a, expires: 2027-01-01}\n  teams: {a: {}}'))
    edit(d / "30-routes.yaml", ("  - {path: /completions, methods: [POST], handler: openai.completions}\n", ""),
         ("handler: metrics}", "handler: metrics, auth: required}"),
         ("  - {path: /healthz,", "  - {path: /v2/chat, methods: [POST], handler: openai.chat}\n  - {path: /healthz,"))
    edit(d / "10-providers.yaml", ("    scheduling: round_robin ", "    scheduling: least_busy "),
         ("      - {email: sim-openai@simulator.local, api_key: sim-key-openai}\n",
          "      - {email: sim-openai@simulator.local, api_key: sim-key-openai}\n"
          "      - {email: sim-openai2@simulator.local, api_key: sim-key-openai2}\n"),
         ("    base_url: \"${OPENAI_BASE_URL:-https://api.openai.com}\"", "    base_url: https://openai.example.com"),
         ("  # The bundled simulator", "  local:\n    dialect: openai\n    base_url: http://127.0.0.1:11434\n"
                                     "    template: openai\n  # The bundled simulator"))
    edit(d / "70-prices.yaml", ("openai/gpt-4o: {input: 2.50", "openai/gpt-4o: {input: 2.00"),
         ('  "anthropic/claude-3-5-haiku*": {input: 0.80, output: 4.00, cached_input: 0.08}\n', ""))
    return d


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_kind_of_change_as_text(changed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(ROUTES), str(changed))
    assert code == 0
    for line in ("models:", "  ~ exact gpt-4o: gemini/gemini-2.5-flash -> openai/gpt-4o",
                 "  + exact gpt-5: openai/gpt-5", "  - exact gpt-4.1 (was: gemini/gemini-2.5-pro)",
                 "  + wildcard mistral-*: openai/mistral-*",
                 "  ~ wildcard claude-*: anthropic/claude-* -> anthropic/claude-*-latest",
                 "  ~ default: gemini/gemini-2.5-flash -> gemini/gemini-2.5-pro",
                 "routes:", "  + POST /v2/chat: openai.chat (auth inherit)",
                 "  - POST /completions (was: openai.completions (auth inherit))",
                 "  ~ GET /metrics: metrics (auth inherit) -> metrics (auth required)",
                 "auth:", "  ~ mode: off -> strict",
                 "  ~ key default: no restrictions -> models [gpt-4o], limits {rpm: 10}",
                 "  + key ci: team a, expires 2027-01-02T00:00:00Z",
                 "providers:", "  + local: dialect openai, base_url http://127.0.0.1:11434, accounts 1, "
                               "scheduling round_robin",
                 "  ~ openai base_url: https://api.openai.com -> https://openai.example.com",
                 "  ~ sim-openai accounts: 1 -> 2", "  ~ gemini scheduling: round_robin -> least_busy",
                 "prices:", "  ~ openai/gpt-4o: input 2.5, output 10.0, cached input 1.25 USD/M tokens -> "
                            "input 2.0, output 10.0, cached input 1.25 USD/M tokens",
                 "  - anthropic/claude-3-5-haiku* (was: input 0.8, output 4.0, cached input 0.08 USD/M tokens)"):
        assert line + "\n" in out, (line, out)
    assert out.strip().endswith("18 change(s): 5 added, 3 removed, 10 changed")


def test_markdown_for_a_pull_request(changed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(ROUTES), str(changed), "--format", "markdown")
    assert code == 0 and out.startswith(f"### router diff `{ROUTES}` → `{changed}`")
    assert "#### models\n\n| | what | before | after |\n|---|---|---|---|\n" in out
    assert "| ~ | `exact gpt-4o` | gemini/gemini-2.5-flash | openai/gpt-4o |" in out
    assert "| + | `key ci` | — | team a, expires 2027-01-02T00:00:00Z |" in out
    assert "| - | `POST /completions` | openai.completions (auth inherit) | — |" in out


def test_no_changes_and_exit_code(changed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(ROUTES), str(ROUTES), "--exit-code")
    assert code == 0 and "no changes that clients would see" in out
    code, _, _ = run(capsys, str(ROUTES), str(changed), "--exit-code")
    assert code == 1


def test_no_key_material(changed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_API_KEY", "sk-router-key-do-not-show")
    monkeypatch.setenv("CI_KEY_NEVER_SET", "sk-ci-do-not-show")
    for fmt in ("text", "markdown"):
        _, out, err = run(capsys, str(ROUTES), str(changed), "--format", fmt)
        assert "do-not-show" not in out + err and "sim-key-openai2" not in out and "placeholder" not in out


def test_a_broken_dir_is_located(changed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (changed / "20-mapping.yaml").write_text("model_mapping:\n  default: nowhere/x\n")
    code, out, err = run(capsys, str(ROUTES), str(changed))
    assert code == 2 and f"{changed / '20-mapping.yaml'}:2:" in out and "error(s)" in err
    code, out, _ = run(capsys, str(changed / "missing"), str(ROUTES))
    assert code == 2 and "config directory not found" in out


def test_split_weights_and_fallback_triggers_are_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = copy_routes(tmp_path / "old"), copy_routes(tmp_path / "new")
    for d, weights, on in ((old, (90, 10), "[429]"), (new, (10, 90), "[5xx, timeout]")):
        edit(d / "20-mapping.yaml", ("  exact:\n", "  exact:\n"
             f"    m1: {{split: {{gemini/gemini-2.5-flash: {weights[0]}, openai/gpt-4o: {weights[1]}}}}}\n"
             f"    m2: {{fallback: [openai/gpt-4o, gemini/gemini-2.5-pro], on: {on}}}\n"))
    code, out, _ = run(capsys, str(old), str(new), "--exit-code")
    assert code == 1, out
    assert "gemini/gemini-2.5-flash: 90, openai/gpt-4o: 10" in out and "gemini/gemini-2.5-flash: 10" in out
    assert "on [429]" in out and "on [5xx, timeout]" in out
