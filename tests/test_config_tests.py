"""``router test``: a config's test cases, run offline, with a readable diff and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import main
from router.config_tests import ABSENT, resolve_pointer
from tests.conftest import ROUTES, copy_routes

BROKEN = """tests:
  - name: gpt-4o goes somewhere else
    request: {model: gpt-4o}
    expect:
      status: 200
      provider: openai
      upstream_model: gemini-2.5-flash
      upstream:
        headers: {x-goog-api-key: "***", X-Absent: null}
        body: {/generationConfig/maxOutputTokens: 256}
      response_headers: {X-Mapped-Model: gpt-4o}
  - name: still fine
    request: {model: gpt-4o}
    expect: {status: 200}
"""
KEYED = """tests:
  - name: the CI key may use gpt-4o
    request: {model: gpt-4o, key: ci}
    expect: {status: 200, key: ci}
  - name: but not claude
    request: {model: claude-sonnet-4, key: ci}
    expect: {status: 403, error: "may not use the model"}
  - name: no key at all
    request: {model: gpt-4o}
    expect: {status: 401}
  - name: a presented key
    request: {model: gpt-4o, headers: {Authorization: Bearer sk-ci-test-key}}
    expect: {status: 200, key: ci}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["test", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_shipped_cases_pass(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-set-here-but-not-read")  # router test reads no secret
    code, out, _ = run(capsys, str(ROUTES))
    assert code == 0, out
    assert "FAIL" not in out and out.strip().endswith("8 passed, 0 failed")
    assert "AIza-set-here-but-not-read" not in out


def test_a_broken_case_fails_with_a_readable_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(BROKEN)
    code, out, _ = run(capsys, str(ROUTES), "--cases", str(cases))
    assert code == 1
    assert f"FAIL gpt-4o goes somewhere else  ({cases}:2)" in out
    assert "       provider:\n         expected: \"openai\"\n         got:      \"gemini\"" in out
    assert "upstream.body/generationConfig/maxOutputTokens:\n         expected: 256\n         got:      \"(absent)\"" \
        in out
    assert "response_headers[X-Mapped-Model]:\n         expected: \"gpt-4o\"\n         got:      \"gemini-2.5-flash\"" \
        in out
    assert "upstream_model" not in out and "x-goog-api-key" not in out and "X-Absent" not in out  # those pass
    assert "ok   still fine" in out and out.strip().endswith("1 passed, 1 failed")


def test_keys_by_name_and_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_routes(tmp_path / "routes.d")
    (d / "00-server.yaml").write_text("server: {allow_lan_access: true}\nauth:\n  mode: all_except_health\n"
                                      "  api_keys: [{name: ci, key: sk-ci-test-key, models: [gpt-4o]}]\n")
    (d / "tests").mkdir()
    (d / "tests" / "keys.yaml").write_text(KEYED)
    code, out, _ = run(capsys, str(d))
    assert code == 0, out
    assert out.strip().endswith("4 passed, 0 failed")


def test_invalid_cases_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("tests:\n  - name: x\n    request: {model: gpt-4o}\n    expect: {status: 200, provder: a}\n"
                     "  - name: y\n    request: {modle: gpt-4o}\n    expect: {status: 200}\n")
    code, out, err = run(capsys, str(ROUTES), "--cases", str(cases))
    assert code == 2 and "error(s)" in err
    assert f"{cases}:4:" in out and "'provder'" in out
    assert f"{cases}:6:" in out and "'modle'" in out
    cases.write_text("tests: [\n")
    code, out, _ = run(capsys, str(ROUTES), "--cases", str(cases))
    assert code == 2 and "YAML error" in out


def test_a_broken_config_is_located_and_missing_cases_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    d = copy_routes(tmp_path / "routes.d")
    code, _, err = run(capsys, str(d))
    assert code == 2 and "no cases" in err
    (d / "tests").mkdir()
    (d / "tests" / "t.yaml").write_text(BROKEN)
    (d / "20-mapping.yaml").write_text("model_mapping:\n  default: nowhere/x\n")
    code, out, _ = run(capsys, str(d))
    assert code == 2 and "20-mapping.yaml:2:" in out


def test_the_tests_dir_is_not_config_and_not_a_notice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_routes(tmp_path / "routes.d")
    (d / "tests").mkdir()
    (d / "tests" / "t.yaml").write_text(BROKEN)
    assert main(["check", str(d)]) == 0
    _, err = capsys.readouterr()
    assert "not read" not in err


def test_json_pointers() -> None:
    doc = {"a": [{"b/c": 1, "d~e": 2}]}
    assert resolve_pointer(doc, "/a/0/b~1c") == 1 and resolve_pointer(doc, "/a/0/d~0e") == 2
    assert resolve_pointer(doc, "/a/1") == ABSENT and resolve_pointer(doc, "") == doc
