"""Keys as code: key_sha256, the models a key may use (403 in every client family), expiry (401),
filtered model lists, the key in the access log and metrics, hot reload, ``router hash-key``, and
no key material in logs, metrics or admin output."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from router.auth import ModelFilter
from tests.conftest import ROOT, Harness, start_gateway

A_KEY, B_KEY, OLD_KEY, ADMIN_KEY = "sk-alpha-secret-1", "sk-beta-secret-2", "sk-old-secret-3", "sk-admin-secret-4"
A_HASH = hashlib.sha256(A_KEY.encode()).hexdigest()
SECRETS = (A_KEY, B_KEY, OLD_KEY, ADMIN_KEY, A_HASH)
AUTH = f"""\
auth:
  mode: strict
  api_keys:
    - name: alpha
      key_sha256: "{A_HASH}"
      team: team-a
      models: ["gpt-4o", "gemini-3-*", "claude-*"]
    - {{name: beta, key: "{B_KEY}", expires: "2999-12-31"}}
    - {{name: old, key: "{OLD_KEY}", expires: 2020-01-31}}
  teams:
    team-a: {{}}
  admin_keys:
    - {{name: ops, key_sha256: "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"}}
"""
HI = [{"role": "user", "content": "hi"}]
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def h(config_dir: Path) -> AsyncIterator[Harness]:
    (config_dir / "00-server.yaml").write_text(AUTH)
    harness = await start_gateway(config_dir)
    sink = io.BytesIO()
    harness.gateway.access_log.stream = sink
    harness.gateway.access_log.configure("json", True)
    try:
        yield harness
    finally:
        await harness.close()


def access_lines(h: Harness) -> list[dict[str, Any]]:
    h.gateway.access_log.flush()
    stream = h.gateway.access_log.stream
    assert isinstance(stream, io.BytesIO)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --- the models a key may use ------------------------------------------------------------------------


def test_model_filter_exact_and_globs() -> None:
    f = ModelFilter(("gpt-4o", "gemini-*", "*-mini", "a*b*c"))
    for ok in ("gpt-4o", "gemini-", "gemini-2.5-flash", "o4-mini", "abc", "a-b-c", "axbyc"):
        assert f.allows(ok), ok
    for no in ("gpt-4o-mini2", "gpt-4", "GPT-4o", "xgemini-2", "acb", "gemini", "gpt-4o\n", "a.b"):
        assert not f.allows(no), no
    assert ModelFilter(("a.b",)).allows("a.b") and not ModelFilter(("a.*",)).allows("ab")  # no regex syntax


async def test_disallowed_model_is_403_in_openai_via_the_sdk(h: Harness) -> None:
    client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key=A_KEY, max_retries=0)
    ok = await client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    assert ok.choices[0].message.content
    before = len(await h.sim_requests())
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client.chat.completions.create(model="gpt-5", messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == 403
    body: Any = info.value.body
    assert body["type"] == "permission_error" and body["code"] == "model_not_allowed" and body["param"] == "model"
    assert "'gpt-5'" in body["message"] and "alpha" in body["message"]
    assert len(await h.sim_requests()) == before  # refused before any upstream call
    await client.close()


async def test_disallowed_model_is_403_in_anthropic_via_the_sdk(h: Harness) -> None:
    client = anthropic.AsyncAnthropic(base_url=h.url, api_key=A_KEY, max_retries=0)
    ok = await client.messages.create(model="claude-sonnet-4", max_tokens=16, messages=HI)  # type: ignore[arg-type]
    assert ok.content
    before = len(await h.sim_requests())
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        await client.messages.create(model="gemini-2.5-flash", max_tokens=16, messages=HI)  # type: ignore[arg-type]
    body: Any = info.value.body
    assert info.value.status_code == 403 and body["error"]["type"] == "permission_error"
    assert "'gemini-2.5-flash'" in body["error"]["message"]
    assert len(await h.sim_requests()) == before
    await client.close()


async def test_disallowed_model_is_403_in_gemini_and_ollama(h: Harness) -> None:
    before = len(await h.sim_requests())
    status, doc, _ = await h.post_json("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI_BODY,
                                       headers={"x-goog-api-key": A_KEY})
    assert status == 403 and doc["error"]["status"] == "PERMISSION_DENIED" and doc["error"]["code"] == 403
    assert "'gemini-2.5-flash'" in doc["error"]["message"]
    status, doc, _ = await h.post_json("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                                       GEMINI_BODY, headers={"x-goog-api-key": A_KEY})
    assert status == 403 and doc["error"]["status"] == "PERMISSION_DENIED"
    status, doc, _ = await h.post_json("/api/chat", {"model": "gpt-5", "messages": HI}, headers=bearer(A_KEY))
    assert status == 403 and "'gpt-5'" in doc["error"]
    status, doc, _ = await h.post_json("/v1/responses", {"model": "gpt-5", "input": "hi"}, headers=bearer(A_KEY))
    assert status == 403 and doc["error"]["type"] == "permission_error" and "'gpt-5'" in doc["error"]["message"]
    assert len(await h.sim_requests()) == before
    status, doc, _ = await h.post_json("/v1beta/models/gpt-4o:generateContent", GEMINI_BODY,
                                       headers={"x-goog-api-key": A_KEY})
    assert status == 200, doc


async def test_token_counting_is_local_and_not_restricted(h: Harness) -> None:
    status, doc, _ = await h.post_json("/v1/messages/count_tokens", {"model": "gpt-5", "messages": HI},
                                       headers={"x-api-key": A_KEY})
    assert status == 200 and doc["input_tokens"] > 0, doc


async def test_the_check_uses_the_client_model_name_before_mapping(h: Harness) -> None:
    """gpt-4o maps to gemini-2.5-flash: the key may use gpt-4o, not the upstream name."""
    status, doc, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI},
                                       headers=bearer(A_KEY))
    assert status == 200 and doc["model"] == "gpt-4o"
    status, doc, _ = await h.post_json("/v1/chat/completions", {"model": "nonexistent", "messages": HI},
                                       headers=bearer(A_KEY))
    assert status == 403 and doc["error"]["code"] == "model_not_allowed"  # not a 404: no hint it exists
    status, doc, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI},
                                       headers=bearer(B_KEY))
    assert status == 200, doc  # beta: no models list, every model


async def test_model_lists_show_only_what_the_key_may_use(h: Harness) -> None:
    async def ids(path: str, key: str, **headers: str) -> list[str]:
        r = await h.request("GET", path, headers={**bearer(key), **headers})
        assert r.status == 200, await r.text()
        doc = await r.json()
        if "models" in doc:  # gemini, ollama
            return sorted(m.get("name", "").removeprefix("models/") for m in doc["models"])
        return sorted(m["id"] for m in doc["data"])

    everything = await ids("/v1/models", B_KEY)
    assert "gpt-4.1" in everything and "gemini-2.5-flash" in everything
    allowed = [m for m in everything if m == "gpt-4o" or m.startswith(("claude-", "gemini-3-"))]
    assert allowed == ["gemini-3-flash", "gpt-4o"] and await ids("/v1/models", A_KEY) == allowed
    assert await ids("/v1/models", A_KEY, **{"anthropic-version": "2023-06-01"}) == allowed
    assert await ids("/v1beta/models", A_KEY) == allowed
    assert await ids("/api/tags", A_KEY) == sorted(m for m in allowed)


async def test_a_disallowed_model_is_404_like_an_unknown_one(h: Harness) -> None:
    r = await h.request("GET", "/v1/models/gpt-4o", headers=bearer(A_KEY))
    assert r.status == 200 and (await r.json())["id"] == "gpt-4o"
    for path in ("/v1/models/gpt-5", "/v1/models/no-such-model"):
        r = await h.request("GET", path, headers=bearer(A_KEY))
        doc = await r.json()
        assert r.status == 404 and doc["error"]["code"] == "model_not_found", doc
        assert doc["error"]["message"] == f"The model '{path.rsplit('/', 1)[1]}' does not exist"
    r = await h.request("GET", "/v1beta/models/gpt-5", headers={"x-goog-api-key": A_KEY})
    assert r.status == 404
    status, doc, _ = await h.post_json("/api/show", {"model": "gpt-5"}, headers=bearer(A_KEY))
    assert status == 404, doc
    r = await h.request("GET", "/v1/models/gpt-5", headers=bearer(B_KEY))
    assert r.status == 200


# --- hashes, wrong keys, expiry ------------------------------------------------------------------


async def test_key_sha256_authenticates_and_a_wrong_key_does_not(h: Harness) -> None:
    r = await h.request("GET", "/v1/models", headers=bearer(A_KEY))
    assert r.status == 200
    for wrong in (A_HASH, A_KEY + "x", A_KEY[:-1], A_KEY.upper()):
        r = await h.request("GET", "/v1/models", headers=bearer(wrong))
        doc = await r.json()
        assert r.status == 401 and doc["error"]["message"] == "Incorrect API key provided", doc
    r = await h.request("GET", "/admin/config", headers=bearer(A_KEY))
    assert r.status == 401  # a client key is not an admin key
    r = await h.request("GET", "/admin/config", headers=bearer(ADMIN_KEY))
    assert r.status == 200  # the admin key, given as its hash


@pytest.mark.parametrize(("path", "body", "check"), [
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": HI},
     lambda d: d["error"]["type"] == "authentication_error" and d["error"]["code"] == "expired_api_key"
     and d["error"]["message"]),
    ("/v1/messages", {"model": "gpt-4o", "max_tokens": 5, "messages": HI},
     lambda d: d["error"]["type"] == "authentication_error" and d["error"]["message"]),
    ("/v1beta/models/gpt-4o:generateContent", GEMINI_BODY,
     lambda d: d["error"]["status"] == "UNAUTHENTICATED" and d["error"]["message"]),
], ids=["openai", "anthropic", "gemini"])
async def test_an_expired_key_is_a_401_that_says_so(h: Harness, path: str, body: dict[str, Any], check: Any) -> None:
    status, doc, _ = await h.post_json(path, body, headers=bearer(OLD_KEY))
    message = check(doc)
    assert status == 401 and message, doc
    # expires: 2020-01-31 is the end of that day, UTC
    assert message == "The API key 'old' expired at 2020-02-01T00:00:00Z", message
    assert "incorrect" not in message.lower()


async def test_expiry_is_checked_per_request(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import router.app

    r = await h.request("GET", "/v1/models", headers=bearer(B_KEY))
    assert r.status == 200  # expires: 2999-12-31
    future = 32_503_680_000.0 + 86_400  # 3000-01-01T00:00:00Z plus a day
    monkeypatch.setattr(router.app.time, "time", lambda: future)
    r = await h.request("GET", "/v1/models", headers=bearer(B_KEY))
    assert r.status == 401 and "expired at 3000-01-01T00:00:00Z" in (await r.json())["error"]["message"]


# --- what shows: access log, metrics, admin ---------------------------------------------------------


async def test_access_log_and_metrics_carry_the_key_name(h: Harness) -> None:
    await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI}, headers=bearer(A_KEY))
    await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI}, headers=bearer(A_KEY))
    await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI}, headers=bearer(B_KEY))
    await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI}, headers=bearer("wrong"))
    lines = [line for line in access_lines(h) if line["route"] == "/v1/chat/completions"]
    assert [(line["key"], line["team"], line["status"]) for line in lines] == [
        ("alpha", "team-a", 200), ("alpha", "team-a", 403), ("beta", None, 200), (None, None, 401)]
    text = await (await h.request("GET", "/metrics", headers=bearer(B_KEY))).text()
    route = 'route="/v1/chat/completions"'
    assert f'router_requests_total{{client_model="gpt-4o",key="alpha",provider="simulator",{route},status="200"}} 1.0' \
        in text, text
    assert f'router_requests_total{{client_model="gpt-5",key="alpha",provider="",{route},status="403"}} 1.0' in text
    assert f'router_requests_total{{client_model="",key="",provider="",{route},status="401"}} 1.0' in text
    assert 'router_tokens_total{direction="in",key="alpha",provider="simulator"}' in text
    assert 'router_tokens_total{direction="out",key="beta",provider="sim-openai"}' in text  # gpt-5: openai
    assert not any(s in text for s in SECRETS)


async def test_admin_config_shows_names_teams_models_and_expiry_never_keys(h: Harness) -> None:
    r = await h.request("GET", "/admin/config", headers={"x-api-key": ADMIN_KEY})
    text = await r.text()
    auth = json.loads(text)["auth"]
    assert auth == {
        "mode": "strict", "teams": ["team-a"], "admin_keys": ["ops"],
        "api_keys": [
            {"name": "alpha", "team": "team-a", "models": ["gpt-4o", "gemini-3-*", "claude-*"], "expires": None},
            {"name": "beta", "team": None, "models": None, "expires": "3000-01-01T00:00:00Z"},
            {"name": "old", "team": None, "models": None, "expires": "2020-02-01T00:00:00Z"}]}
    hashes = [hashlib.sha256(s.encode()).hexdigest() for s in SECRETS]
    assert not any(s in text for s in (*SECRETS, *hashes))


async def test_no_key_material_in_logs(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    for key in (A_KEY, B_KEY, OLD_KEY, "sk-wrong-secret"):
        await h.post_json("/v1/chat/completions", {"model": "gpt-5", "messages": HI}, headers=bearer(key))
    logged = caplog.text + json.dumps(access_lines(h))
    assert "alpha" in logged and not any(s in logged for s in (*SECRETS, "sk-wrong-secret"))


# --- hot reload ----------------------------------------------------------------------------------


async def test_reload_adds_removes_and_changes_keys(h: Harness) -> None:
    async def status(key: str, model: str = "gpt-5") -> int:
        code, _, _ = await h.post_json("/v1/chat/completions", {"model": model, "messages": HI}, headers=bearer(key))
        return code

    assert (await status(A_KEY), await status(B_KEY), await status(OLD_KEY), await status("sk-new")) == \
        (403, 200, 401, 401)
    changed = AUTH.replace('["gpt-4o", "gemini-3-*", "claude-*"]', '["gpt-*"]').replace('"2999-12-31"', "2021-01-01") \
        .replace(f'    - {{name: old, key: "{OLD_KEY}", expires: 2020-01-31}}\n',
                 '    - {name: new, key: "sk-new"}\n')
    (h.config_dir / "00-server.yaml").write_text(changed)
    assert await h.gateway.reload("test"), h.gateway.last_error
    assert (await status(A_KEY), await status(B_KEY), await status(OLD_KEY), await status("sk-new")) == \
        (200, 401, 401, 200)
    assert await status(A_KEY, "gpt-4o") == 200 and await status(A_KEY, "claude-sonnet-4") == 403


async def test_a_reload_with_a_bad_key_entry_keeps_the_running_keys(h: Harness) -> None:
    (h.config_dir / "00-server.yaml").write_text(AUTH.replace("team: team-a", "team: team-b"))
    assert not await h.gateway.reload("test")
    assert "unknown team 'team-b'" in str(h.gateway.last_error)
    code, _, _ = await h.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": HI}, headers=bearer(A_KEY))
    assert code == 200


# --- router hash-key ------------------------------------------------------------------------------


def _hash_key(stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "router", "hash-key", *args], input=stdin, cwd=ROOT,
                          capture_output=True, timeout=60, check=False)


def test_hash_key_round_trip(tmp_path: Path) -> None:
    done = _hash_key(b"sk-round-trip\n")
    assert done.returncode == 0, done.stderr
    digest = done.stdout.decode().strip()
    assert digest == hashlib.sha256(b"sk-round-trip").hexdigest() and b"sk-round-trip" not in done.stderr
    assert _hash_key(b"  sk-round-trip").stdout.decode().strip() == digest  # whitespace is no part of a key
    raw = _hash_key(b"sk-\xff\xfe-latin1")  # not UTF-8: the bytes as a client sends them in a header
    assert raw.stdout.decode().strip() == hashlib.sha256(b"sk-\xff\xfe-latin1").hexdigest()


@pytest.mark.parametrize(("stdin", "why"), [(b"", b"empty"), (b"\n  \n", b"empty"), (b"a\nb\n", b"one key per run")])
def test_hash_key_refuses_no_key_or_several(stdin: bytes, why: bytes) -> None:
    done = _hash_key(stdin)
    assert done.returncode == 1 and why in done.stderr and done.stdout == b""


def test_hash_key_takes_no_key_on_the_command_line() -> None:
    done = _hash_key(b"", "sk-on-argv")
    assert done.returncode == 2 and b"sk-on-argv" in done.stderr  # argparse: unrecognized arguments


async def test_a_hash_from_hash_key_authenticates(config_dir: Path) -> None:
    digest = (await asyncio.to_thread(_hash_key, b"sk-made-by-cli")).stdout.decode().strip()
    (config_dir / "00-server.yaml").write_text(
        f'auth:\n  mode: strict\n  api_keys:\n    - {{name: cli, key_sha256: "{digest}"}}\n')
    h = await start_gateway(config_dir)
    try:
        assert (await h.request("GET", "/v1/models", headers=bearer("sk-made-by-cli"))).status == 200
        assert (await h.request("GET", "/v1/models", headers=bearer(digest))).status == 401
    finally:
        await h.close()


# --- the config: what the schema and the auth check accept ---------------------------------------------


@pytest.mark.parametrize(("entry", "message"), [
    ("{name: a}", "/auth/api_keys/0 expected exactly one of key (the secret) or key_sha256"),
    ("{name: a, key: k, models: []}", "/auth/api_keys/0/models [] should be non-empty"),
    ("{name: a, key: k, expires: 2027-06-31}", "4:34: YAML error: cannot build this value (ValueError: day is out"),
    ("{name: a, key: k, expires: 'soon'}", "'soon' is not valid: expected a date"),
    ("{name: a, key: k, expires: '2027-02-30'}", "api key 'a': expires '2027-02-30' is not a real date or time"),
    ("{name: a, key: k, expires: 2027-06-30T12:00:00}", "is not valid: expected a date"),
    ("{name: a, key: k, team: t}", "api key 'a' names unknown team 't' (none defined): declare it under auth."),
    ("{name: a, key: k, limits: {rph: 1}}", "unknown field 'rph'"),
    ("{name: a, key: k, limits: {rpm: 0}}", "at /auth/api_keys/0/limits/rpm 0 is less than the minimum of 1"),
], ids=["neither", "no-models", "no-such-day", "not-a-date", "no-such-quoted-day", "no-zone", "undeclared-team",
        "unknown-limit", "zero-limit"])
def test_key_entries_the_config_rejects(tmp_path: Path, entry: str, message: str) -> None:
    from router.registry import template_filters
    from router.snapshot import check
    from tests.conftest import MINIMAL_CONFIG

    (tmp_path / "10-base.yaml").write_text(MINIMAL_CONFIG)
    (tmp_path / "20-auth.yaml").write_text(f"auth:\n  mode: strict\n  api_keys:\n    - {entry}\n")
    errors = [str(e) for e in check(tmp_path, template_filters(), env={})]
    assert len(errors) == 1 and message in errors[0] and errors[0].startswith("20-auth.yaml:4:"), errors


def test_admin_keys_take_exactly_one_of_key_or_key_sha256(tmp_path: Path) -> None:
    from router.registry import template_filters
    from router.snapshot import check
    from tests.conftest import MINIMAL_CONFIG

    (tmp_path / "10-base.yaml").write_text(MINIMAL_CONFIG)
    (tmp_path / "20-auth.yaml").write_text(
        f'auth:\n  admin_keys:\n    - {{name: a, key: x, key_sha256: "{A_HASH}"}}\n    - {{name: b, team: t}}\n'
        f'    - {{name: c, key: "{A_KEY}"}}\n    - {{name: d, key_sha256: "{A_HASH}"}}\n')
    errors = [str(e) for e in check(tmp_path, template_filters(), env={})]
    assert len(errors) == 4, errors
    assert errors[0].startswith("20-auth.yaml:3:7:") and "exactly one of key" in errors[0]
    assert errors[1].startswith("20-auth.yaml:4:7:") and "exactly one of key" in errors[1]  # and no key at all
    assert "unknown field 'team'" in errors[2]
    assert errors[3].startswith("20-auth.yaml:6:7:") and "admin key 'd' has the same key as 'c'" in errors[3]
    assert not any(s in e for e in errors for s in SECRETS)


@pytest.mark.parametrize(("written", "instant"), [
    ("2027-06-30", "2027-07-01T00:00:00Z"),
    ("2027-06-30T12:00:00Z", "2027-06-30T12:00:00Z"),
    ("2027-06-30T12:00:00+02:00", "2027-06-30T10:00:00Z"),
    ("2027-06-30 12:00:00+00:00", "2027-06-30T12:00:00Z"),  # what an unquoted YAML datetime reads as
    ("9999-12-31", "9999-12-31T23:59:59Z"),  # beyond what a datetime holds: the last instant it does
    ("9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59Z"),
    ("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z"),
])
def test_expiry_forms(written: str, instant: str) -> None:
    from router.auth import instant as as_text
    from router.auth import parse_expiry

    assert as_text(parse_expiry(written)) == instant


async def test_unquoted_yaml_dates_are_accepted(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text(
        "auth:\n  mode: strict\n  api_keys:\n    - {name: d, key: k-d, expires: 2999-06-30}\n"
        "    - {name: t, key: k-t, expires: 2999-06-30T12:00:00+02:00}\n")
    h = await start_gateway(config_dir)
    try:
        assert [k.public()["expires"] for k in h.gateway.current.auth.keys] == [
            "2999-07-01T00:00:00Z", "2999-06-30T10:00:00Z"]
    finally:
        await h.close()


async def test_a_key_header_that_is_not_utf8_is_looked_up_not_a_500(config_dir: Path) -> None:
    raw_key = b"sk-\xff\xfe-latin1"
    digest = hashlib.sha256(raw_key).hexdigest()
    entry = f'{{name: raw, key_sha256: "{digest}"}}'
    (config_dir / "00-server.yaml").write_text(f"auth: {{mode: strict, api_keys: [{entry}]}}\n")
    h = await start_gateway(config_dir)

    async def status(key: bytes) -> bytes:
        host, port = h.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + key
                     + b"\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return line.split()[1]

    try:
        assert await status(raw_key) == b"200"
        assert await status(b"sk-\xff\xfd-other") == b"401"
    finally:
        await h.close()
