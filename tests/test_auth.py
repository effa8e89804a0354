"""router.auth: modes, key sources and their order, named keys, constant-time comparison."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from multidict import CIMultiDict

from router.auth import ApiKey, AuthPolicy, compile_auth, key_digest, presented_key
from router.registry import ENDPOINTS, KEY_HEADERS
from router.registry import template_filters
from router.snapshot import check
from tests.conftest import MINIMAL_CONFIG

KEYS = [{"name": "ops", "key": "k-ops"}, {"name": "ci", "key": "k-ci"}, {"name": "unset", "key": ""}]


@pytest.mark.parametrize(("mode", "lan", "effective"), [
    ("off", True, "off"),
    ("strict", False, "strict"),
    ("all_except_health", False, "all_except_health"),
    ("auto", True, "all_except_health"),
    ("auto", False, "off"),
    (None, True, "all_except_health"),
    (None, False, "off"),
], ids=["off", "strict", "all-except-health", "auto-lan", "auto-local", "default-lan", "default-local"])
def test_effective_mode(mode: str | None, lan: bool, effective: str) -> None:
    section = {"api_keys": KEYS} if mode is None else {"mode": mode, "api_keys": KEYS}
    assert compile_auth(section, lan).mode == effective


@pytest.mark.parametrize(("mode", "handler", "route_auth", "required"), [
    ("off", "openai.chat", "inherit", False),
    ("off", "openai.chat", "required", True),
    ("strict", "health", "inherit", True),
    ("strict", "openai.chat", "inherit", True),
    ("strict", "health", "none", False),
    ("all_except_health", "health", "inherit", False),
    ("all_except_health", "openai.chat", "inherit", True),
    ("all_except_health", "models.list", "inherit", True),
], ids=["off", "off-route-required", "strict-health", "strict-chat", "strict-route-none",
        "aeh-health", "aeh-chat", "aeh-models"])
def test_required(mode: str, handler: str, route_auth: str, required: bool) -> None:
    public = ENDPOINTS[handler].public  # the registry marks the endpoints all_except_health leaves open
    assert compile_auth({"mode": mode, "api_keys": KEYS}, False).required(public, route_auth) is required


@pytest.mark.parametrize(("headers", "key"), [
    ({"Authorization": "Bearer a"}, "a"),
    ({"Authorization": "bearer  a  "}, "a"),
    ({"x-api-key": "b"}, "b"),
    ({"x-goog-api-key": "c"}, "c"),
    ({"Authorization": "Bearer a", "x-api-key": "b", "x-goog-api-key": "c"}, "a"),
    ({"x-api-key": "b", "x-goog-api-key": "c"}, "b"),
    ({"Authorization": "Basic dXNlcg==", "x-api-key": "b"}, "b"),
    ({"Authorization": "Bearer ", "x-goog-api-key": "c"}, "c"),
    ({"x-api-key": "", "x-goog-api-key": "c"}, "c"),
    ({"authorization": "Bearer lower"}, "lower"),
    ({}, None),
    ({"Authorization": "Bearer"}, None),
], ids=["bearer", "bearer-case-space", "x-api-key", "x-goog-api-key", "bearer-first", "x-api-key-second",
        "basic-ignored", "empty-bearer", "empty-x-api-key", "lowercase-dict", "none", "bare-scheme"])
def test_presented_key_order(headers: dict[str, str], key: str | None) -> None:
    assert presented_key(headers, KEY_HEADERS) == key
    assert presented_key(CIMultiDict(headers), KEY_HEADERS) == key


def test_identify_named_keys_and_ignores_empty_ones() -> None:
    policy = compile_auth({"mode": "strict", "api_keys": KEYS}, False)
    assert [k.name for k in policy.keys] == ["ops", "ci"]
    assert policy.identify("k-ops") == ApiKey("ops", key_digest("k-ops"))
    assert policy.identify("k-ci") == ApiKey("ci", key_digest("k-ci"))
    for wrong in ("", None, "k-op", "k-ops ", "K-OPS", "k-ops-longer", "ünïcode", "k-ops\udcff"):
        assert policy.identify(wrong) is None  # a header that is not UTF-8 keeps its bytes as surrogates


def test_identify_with_explicit_admin_keys() -> None:
    policy = compile_auth({"mode": "strict", "api_keys": KEYS, "admin_keys": [{"name": "root", "key": "r"}]}, False)
    assert policy.identify("r") is None
    assert policy.identify("r", admin=True) == ApiKey("root", key_digest("r"))
    assert policy.identify("k-ops", admin=True) is None  # a client key is not an admin key


def test_lookup_hashes_once_and_compares_digests_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    keys = tuple(ApiKey(f"k{i}", key_digest(f"secret-{i}")) for i in range(1000))
    policy = AuthPolicy("strict", keys)
    assert policy.identify("secret-999") == keys[999]
    # the presented key is hashed once and found by its digest: one constant-time comparison of
    # digests, whatever the number of keys (the key itself is never compared, nor kept)
    assert calls == [(key_digest("secret-999"), key_digest("secret-999"))]
    calls.clear()
    assert policy.identify("secret-1000") is None and calls == []


@pytest.mark.parametrize(("auth", "ok"), [
    ("auth:\n  mode: strict\n", False),
    ("auth:\n  mode: all_except_health\n  api_keys: [{name: a, key: ''}]\n", False),
    ("auth:\n  mode: strict\n  api_keys: [{name: a, key: k}]\n", True),
    ("auth:\n  mode: auto\n", True),
    ("server: {allow_lan_access: true}\nauth:\n  mode: auto\n  api_keys: [{name: a, key: k}]\n", True),
    ("auth:\n  mode: off\n", True),
], ids=["strict-no-keys", "aeh-empty-key", "strict-with-key", "auto-local-no-keys", "auto-lan-with-key", "off"])
def test_keyless_protected_mode_is_rejected_with_location(tmp_path: Path, auth: str, ok: bool) -> None:
    (tmp_path / "00.yaml").write_text(auth)
    (tmp_path / "01-base.yaml").write_text(MINIMAL_CONFIG)  # routes and a provider: a config that can serve
    errors = [str(e) for e in check(tmp_path, template_filters(), env={})]
    if ok:
        assert errors == []
    else:
        assert errors == ["00.yaml:2:3: at /auth/mode auth mode '" + auth.split("mode: ")[1].split("\n")[0]
                          + "' needs at least one api key with a non-empty key"]
