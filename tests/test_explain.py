"""``router explain`` and ``POST /admin/explain``: a dry run of one request on a config, nothing sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.cli import main
from router.explain import ExplainRequest, explain
from router.tools_cli import offline_snapshot
from tests.conftest import ROUTES, copy_routes, start_gateway

FAKE_GEMINI_KEY = "AIzaFAKE-gemini-key-never-shown-0123456789"
KEYS = ("server: {allow_lan_access: true}\n"
        "auth:\n  mode: all_except_health\n"
        "  api_keys:\n"
        "    - {name: team-a-ci, key: sk-team-a-ci-secret, team: a, models: ['gpt-4o', 'gemini-*'],\n"
        "       limits: {rpm: 60}}\n"
        "    - {name: old, key: sk-old-secret-key, expires: '2000-01-01'}\n"
        "  teams: {a: {}}\n"
        "  admin_keys: [{name: ops, key: sk-admin-secret}]\n")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GEMINI_API_KEY", "GEMINI_API_KEYS", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ROUTER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def keyed(tmp_path: Path) -> Path:
    d = copy_routes(tmp_path / "routes.d")
    (d / "00-server.yaml").write_text(KEYS)
    return d


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def explained(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, _ = run(capsys, *argv, "--format", "json")
    assert code == 0, out
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_exact_rule_and_the_simulator_fallback(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    doc = explained(capsys, str(ROUTES), "--model", "gpt-4o")
    assert doc["status"] == 200 and doc["route"]["handler"] == "openai.chat"
    assert doc["mapping"]["rule"] == "exact:gpt-4o"
    assert doc["mapping"]["target"] == {"kind": "target", "provider": "gemini", "model": "gemini-2.5-flash"}
    pool = doc["pools"][0]
    assert pool["served_by"] == "simulator" and "has no account with a key" in pool["why"]
    up = doc["upstream"]
    assert up["url"] == "builtin:simulator/v1beta/models/gemini-2.5-flash:generateContent"
    assert up["headers"]["x-goog-api-key"] == "***" and "sim-key-a" not in json.dumps(doc)
    assert up["body"]["contents"][0]["parts"][0]["text"] == "Hello"
    assert doc["response_headers"]["X-Mapped-Model"] == "gemini-2.5-flash"


def test_wildcard_and_why_the_others_did_not_match(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    doc = explained(capsys, str(ROUTES), "--model", "claude-sonnet-4", "--stream")
    tried = doc["mapping"]["tried"]
    assert tried[0] == {"rule": "exact", "matched": False, "why": "the exact table (3 names) has no 'claude-sonnet-4'"}
    assert [(s["pattern"], s["matched"]) for s in tried[1:3]] == [("gemini-*", False), ("claude-*", True)]
    assert [s["rule"] for s in tried[3:]] == ["wildcard"] * (len(tried) - 4) + ["default"]
    assert all(s["why"].startswith("not tried: a rule before it decided") for s in tried[3:-1])
    assert tried[-1] == {"rule": "default", "matched": False, "why": "not used: a rule before it decided"}
    assert doc["upstream"]["provider"] == "sim-anthropic" and doc["upstream"]["body"]["stream"] is True
    assert doc["upstream"]["headers"]["x-api-key"] == "***"


def test_an_exact_hit_lists_the_rules_it_shadows(capsys: pytest.CaptureFixture[str], clean_env: None,
                                                tmp_path: Path) -> None:
    config = copy_routes(tmp_path / "routes.d")
    (config / "20-mapping.yaml").write_text(
        "model_mapping:\n  exact: {gpt-4o: openai/gpt-4o}\n"
        "  wildcard: {'gpt-*': gemini/gemini-2.5-flash, 'claude-*': anthropic/claude-x}\n"
        "  default: gemini/gemini-2.5-pro\n")
    tried = explained(capsys, str(config), "--model", "gpt-4o")["mapping"]["tried"]
    assert tried == [
        {"rule": "exact", "matched": True, "why": "'gpt-4o' is in the exact table"},
        {"rule": "wildcard", "pattern": "claude-*", "matched": False, "shadowed": False,
         "why": "not tried: a rule before it decided"},
        {"rule": "wildcard", "pattern": "gpt-*", "matched": False, "shadowed": True,
         "why": "not tried: a rule before it decided (it would match)"},
        {"rule": "default", "matched": False, "why": "not used: a rule before it decided"}]
    code, out, _ = run(capsys, str(config), "--model", "gpt-4o")
    assert code == 0 and "- wildcard gpt-*: not tried: a rule before it decided (it would match)\n" in out
    assert "claude-*" not in out and "- default: not used: a rule before it decided\n" in out


@pytest.mark.parametrize(("args", "words"), [
    (["--body", "/nonexistent/body.json"], "--body /nonexistent/body.json: cannot read it"),
    (["--body", "BODY"], "--body BODY: not JSON"),
    (["--header", "Authorization"], "--header 'Authorization': expected 'Name: value'"),
])
def test_a_bad_option_is_a_clear_message_not_a_traceback(capsys: pytest.CaptureFixture[str], clean_env: None,
                                                        tmp_path: Path, args: list[str], words: str) -> None:
    bad = tmp_path / "body.json"
    bad.write_text("{not json")
    code, out, err = run(capsys, str(ROUTES), "--model", "gpt-4o", *[str(bad) if a == "BODY" else a for a in args])
    assert code == 2 and out == "" and "Traceback" not in err
    assert words.replace("BODY", str(bad)) in err


def test_default_rule(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    doc = explained(capsys, str(ROUTES), "--model", "my-model")
    assert doc["mapping"]["rule"] == "default"
    assert doc["mapping"]["tried"][-1] == {"rule": "default", "matched": True, "why": "used"}


def test_text_output(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    code, out, _ = run(capsys, str(ROUTES), "--model", "gpt-4o")
    assert code == 0
    for line in ("route:   /v1/chat/completions -> openai.chat", "mapping: model 'gpt-4o' -> rule exact:gpt-4o",
                 "target:  gemini/gemini-2.5-flash", "x-goog-api-key: ***", "status:  200"):
        assert line in out, out


def test_no_route_and_405(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    doc = explained(capsys, str(ROUTES), "--model", "gpt-4o", "--path", "/v2/nothing")
    assert doc["status"] == 404 and doc["route"]["matched"] is False and "mapping" not in doc
    doc = explained(capsys, str(ROUTES), "--model", "gpt-4o", "--method", "GET")
    assert doc["status"] == 405


def test_keys_by_name_allowed_disallowed_expired(capsys: pytest.CaptureFixture[str], clean_env: None,
                                                keyed: Path) -> None:
    doc = explained(capsys, str(keyed), "--model", "gpt-4o", "--key", "team-a-ci")
    key = doc["auth"]["key"]
    assert doc["status"] == 200 and key["found_by"] == "name" and key["team"] == "a"
    assert key["limits"] == {"rpm": 60} and doc["auth"]["model_allowed"] is True
    doc = explained(capsys, str(keyed), "--model", "claude-sonnet-4", "--key", "team-a-ci")
    assert doc["status"] == 403 and "may not use the model 'claude-sonnet-4'" in doc["error"]
    assert "mapping" not in doc
    assert explained(capsys, str(keyed), "--model", "gpt-4o", "--key", "old")["status"] == 401
    assert explained(capsys, str(keyed), "--model", "gpt-4o")["status"] == 401
    doc = explained(capsys, str(keyed), "--model", "gpt-4o", "--key", "nobody")
    assert doc["status"] == 401 and "no key named 'nobody'" in doc["error"]
    doc = explained(capsys, str(keyed), "--model", "gpt-4o", "--header", "Authorization: Bearer sk-team-a-ci-secret")
    assert doc["status"] == 200 and doc["auth"]["key"]["found_by"] == "presented"
    assert "sk-team-a-ci-secret" not in json.dumps(doc)


def test_a_body_from_stdin_on_a_gemini_path(capsys: pytest.CaptureFixture[str], clean_env: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 9}}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(body)))
    doc = explained(capsys, str(ROUTES), "--path", "/v1beta/models/gemini-2.5-pro:generateContent", "--body", "-")
    assert doc["mapping"]["rule"] == "wildcard:gemini-*" and doc["template"] == "gemini-passthrough"
    assert doc["upstream"]["body"] == body


def test_a_provider_key_is_never_printed(capsys: pytest.CaptureFixture[str], clean_env: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_GEMINI_KEY)
    for fmt in ("text", "json"):
        code, out, err = run(capsys, str(ROUTES), "--model", "gpt-4o", "--format", fmt)
        assert code == 0 and FAKE_GEMINI_KEY not in out + err
        assert "generativelanguage.googleapis.com" in out and "served by" not in out.replace('"served_by"', "")
    doc = explain(offline_snapshot(ROUTES), ExplainRequest(model="gpt-4o"))
    assert doc["pools"][0]["accounts"][0]["label"] == "gemini-key-1"
    assert FAKE_GEMINI_KEY not in json.dumps(doc)


def test_a_broken_dir_gives_located_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_routes(tmp_path / "routes.d")
    (d / "20-mapping.yaml").write_text("model_mapping:\n  exact:\n    gpt-4o: nowhere/x\n")
    code, out, err = run(capsys, str(d), "--model", "gpt-4o")
    assert code == 2 and "20-mapping.yaml:3:" in out and "error(s)" in err


async def test_admin_explain_is_live_and_needs_the_admin_key(keyed: Path) -> None:
    h = await start_gateway(keyed, env={"GEMINI_API_KEY": FAKE_GEMINI_KEY})
    try:
        status, _, _ = await h.post_json("/admin/explain", {"model": "gpt-4o"},
                                         headers={"Authorization": "Bearer sk-team-a-ci-secret"})
        assert status in (401, 404)  # a client key does not open the admin API
        admin = {"x-api-key": "sk-admin-secret"}
        status, doc, _ = await h.post_json("/admin/explain", {"model": "gpt-4o", "key": "team-a-ci"}, headers=admin)
        assert status == 200 and doc["status"] == 200, doc
        account = doc["pools"][0]["accounts"][0]
        assert account["state"] == "ok" and account["in_flight"] == 0
        assert doc["upstream"]["url"].startswith("https://generativelanguage.googleapis.com/v1beta/models/")
        assert FAKE_GEMINI_KEY not in json.dumps(doc)
        request = {"path": "/v1/messages", "headers": {"x-api-key": "sk-team-a-ci-secret"},
                   "body": {"model": "gemini-2.5-pro", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}
        status, doc, _ = await h.post_json("/admin/explain", request, headers=admin)
        assert status == 200 and doc["route"]["handler"] == "anthropic.messages" and doc["status"] == 200
        assert "sk-team-a-ci-secret" not in json.dumps(doc)
        status, doc, _ = await h.post_json("/admin/explain", {"model": 5}, headers=admin)
        assert status == 400
    finally:
        await h.close()


def test_the_readme_sample_is_what_the_command_prints(capsys: pytest.CaptureFixture[str], clean_env: None) -> None:
    readme = (ROUTES.parent / "README.md").read_text()
    sample = readme.split("router explain routes.d --model gpt-4.1 --stream\n```\n```text\n", 1)[1].split("```")[0]
    code, out, _ = run(capsys, str(ROUTES), "--model", "gpt-4.1", "--stream")
    assert code == 0 and out == sample


@pytest.mark.parametrize(("path", "handler"), [
    ("/v1/messages", "anthropic.messages"), ("/v1/completions", "openai.completions"),
    ("/v1/responses", "openai.responses"), ("/api/chat", "ollama.chat"), ("/api/generate", "ollama.generate")])
def test_a_body_is_made_up_for_each_client_codec(path: str, handler: str, clean_env: None) -> None:
    doc = explain(offline_snapshot(ROUTES), ExplainRequest(path=path, model="claude-sonnet-4", stream=True))
    assert doc["status"] == 200 and doc["route"]["handler"] == handler, doc
    assert doc["decode"] == {"codec": handler, "model": "claude-sonnet-4", "stream": True}
    assert doc["upstream"]["provider"] == "sim-anthropic"


CREDENTIAL_ACCOUNTS = """
providers:
  tok:
    dialect: gemini
    base_url: https://generativelanguage.googleapis.com
    template: gemini
    accounts:
      - email: alice@example.com
        credential: {type: oauth2_refresh_token, token_url: "https://oauth2.example/token", client_id: cid,
                     client_secret: cs-never-shown, refresh_token: rt-never-shown}
  aws:
    dialect: bedrock
    base_url: https://bedrock-runtime.us-east-1.amazonaws.com
    template: bedrock
    accounts:
      - email: aws-main
        credential: {type: aws_sigv4, access_key_id: AKIDEXAMPLE, secret_access_key: sk-aws-never-shown,
                     region: us-east-1}
model_mapping:
  exact: {tok-model: tok/gemini-2.5-flash, aws-model: aws/anthropic.claude-3-haiku}
"""


def test_the_header_a_credential_adds_at_run_time_is_shown_masked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  clean_env: None) -> None:
    d = copy_routes(tmp_path / "routes.d")
    (d / "85-credentials.yaml").write_text(CREDENTIAL_ACCOUNTS)
    token = explained(capsys, str(d), "--model", "tok-model")["upstream"]["headers"]
    assert token["Authorization"] == "Bearer *** (token fetched at run time)", token
    signed = explained(capsys, str(d), "--model", "aws-model")["upstream"]["headers"]
    assert signed["Authorization"] == "*** (SigV4 signature)", signed
    code, out, _ = run(capsys, str(d), "--model", "tok-model")
    assert code == 0 and "Authorization: Bearer *** (token fetched at run time)" in out
    for secret in ("never-shown", "run-time-token", "sigv4-signature"):
        assert secret not in json.dumps([token, signed]) + out
