"""The ``credential:`` key of an account: its kinds, their schema and located errors, ``${file:...}``
values, and the token cache's single flight and backoff with a counting source (no HTTP)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from router.accounts import Account, StateStore, compile_accounts
from router.config import SECRET_FILE_LIMIT
from router.credential_kinds import API_KEY, KINDS
from router.credential_oauth2 import ClientCredentialsSource, RefreshTokenSource
from router.credentials import CredentialRevoked, CredentialUnavailable, Token
from router.failures import UpstreamFailure
from router.registry import template_filters
from router.resources import schema_files
from router.snapshot import check
from router.tokens import Tokens
from tests.conftest import MINIMAL_CONFIG

REFRESH = {"type": "oauth2_refresh_token", "token_url": "https://oauth2.example/token", "client_id": "cid",
           "client_secret": "cs", "refresh_token": "rt"}


def _config(tmp_path: Path, account: str) -> Path:
    (tmp_path / "c.yaml").write_text(MINIMAL_CONFIG.replace("accounts: [{email: a@x, api_key: k}]",
                                                            f"accounts:\n      - {account}"))
    return tmp_path


def _errors(tmp_path: Path, account: str, env: dict[str, str] | None = None) -> list[str]:
    return [str(e) for e in check(_config(tmp_path, account), template_filters(), env=env or {})]


def test_every_kind_in_the_registry_is_in_the_schema_and_back() -> None:
    [doc] = [json.loads(f.read_text()) for f in schema_files() if f.name == "credentials.schema.json"]
    assert set(doc["properties"]["type"]["enum"]) == {API_KEY, *KINDS}
    assert {k for k in doc["$defs"] if k != "url"} == {API_KEY, *KINDS}


def test_the_two_oauth2_kinds_compile_to_their_sources_and_hide_their_secrets() -> None:
    [acc] = compile_accounts("p", {"accounts": [{"email": "a@x", "credential": REFRESH}]})
    assert isinstance(acc.source, RefreshTokenSource) and acc.credential_kind == "oauth2_refresh_token"
    assert acc.signer is None and acc.api_key == "" and acc.credential_id
    assert "rt" not in repr(acc.source).replace("refresh_token", "") and "'cs'" not in repr(acc.source)
    spec = {"type": "oauth2_client_credentials", "token_url": "https://login.example/t", "client_id": "app",
            "client_secret": "cs", "scope": "https://cognitiveservices.azure.com/.default"}
    [acc] = compile_accounts("p", {"accounts": [{"email": "b@x", "credential": spec}]})
    assert isinstance(acc.source, ClientCredentialsSource)
    [acc] = compile_accounts("p", {"accounts": [{"email": "c@x", "credential": {"type": "api_key", "key": "k1"}}]})
    assert acc.api_key == "k1" and acc.source is None and acc.template_view["api_key"] == "k1"


def test_an_empty_value_leaves_the_account_out_but_a_public_client_needs_no_secret() -> None:
    assert compile_accounts("p", {"accounts": [{"credential": {**REFRESH, "refresh_token": ""}}]}) == ()
    [acc] = compile_accounts("p", {"accounts": [{"credential": {**REFRESH, "client_secret": ""}}]})
    assert acc.source is not None


def test_a_changed_value_is_a_new_credential() -> None:
    [a] = compile_accounts("p", {"accounts": [{"email": "a", "credential": REFRESH}]})
    [b] = compile_accounts("p", {"accounts": [{"email": "a", "credential": REFRESH}]})
    [c] = compile_accounts("p", {"accounts": [{"email": "a", "credential": {**REFRESH, "refresh_token": "rt2"}}]})
    assert a.credential_id == b.credential_id != c.credential_id
    assert "rt" not in a.credential_id  # a hash, not the values


@pytest.mark.parametrize(("credential", "expected"), [
    ('{type: nope}', "credential/type 'nope' is not one of ['api_key', 'oauth2_refresh_token'"),
    ('{type: oauth2_refresh_token, token_url: "https://t", client_id: c}', "'refresh_token' is a required property"),
    ('{type: oauth2_client_credentials, token_url: "https://t", client_id: c, client_secret: s, scope: x, y: 1}',
     "unknown field 'y' (allowed: client_id, client_secret, scope, token_url, type)"),
    ('{type: api_key}', "'key' is a required property"),
    ('{type: oauth2_refresh_token, token_url: oauth2.googleapis.com/token, client_id: c, refresh_token: r}',
     "credential/token_url 'oauth2.googleapis.com/token' does not match '^https?://'"),
])
def test_a_bad_credential_is_a_located_error(tmp_path: Path, credential: str, expected: str) -> None:
    errors = _errors(tmp_path, f"{{email: a@x, credential: {credential}}}")
    assert any(e.startswith("c.yaml:") and expected in e for e in errors), errors


def test_file_values_are_read_relative_to_the_config_bounded_and_located_when_unreadable(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "alice.refresh").write_text("rt-from-file\n")
    account = ('{email: a@x, credential: {type: oauth2_refresh_token, token_url: "https://t", client_id: c, '
               'refresh_token: "${file:secrets/alice.refresh}"}}')
    assert _errors(tmp_path, account) == []
    (tmp_path / "secrets" / "alice.refresh").write_bytes(b"x" * (SECRET_FILE_LIMIT + 1))
    [error] = _errors(tmp_path, account)
    assert error.startswith("c.yaml:") and f"larger than {SECRET_FILE_LIMIT} bytes" in error
    (tmp_path / "secrets" / "alice.refresh").unlink()
    [error] = _errors(tmp_path, account)
    assert error.startswith("c.yaml:") and "cannot read ${file:" in error and "alice.refresh" in error


class _Counting:
    """A token source counting its fetches: slow, or failing with ``error``."""

    def __init__(self, delay: float = 0.0, error: Exception | None = None, lifetime: float = 3600.0) -> None:
        self.fetches = 0
        self.delay, self.error, self.lifetime = delay, error, lifetime

    async def fetch(self, http: aiohttp.ClientSession) -> Token:
        self.fetches += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return Token(f"at-{self.fetches}", time.time() + self.lifetime)


def _account(source: _Counting) -> Account:
    return Account("p", "a", "a@x", "", 1, source, None, "fp-1", "oauth2_refresh_token")


async def test_fifty_waiters_on_an_expired_token_cause_one_fetch() -> None:
    source = _Counting(delay=0.1)
    tokens, account = Tokens(StateStore()), _account(source)
    http = aiohttp.ClientSession()
    try:
        assert tokens.view(account) is None
        views = await asyncio.gather(*(tokens.obtain(account, http) for _ in range(50)))
        assert source.fetches == 1
        assert all(isinstance(v, dict) and v["access_token"] == "at-1" for v in views)
        assert tokens.view(account) is views[0]  # the fast path: the same view, no await
    finally:
        await http.close()


async def test_a_failed_fetch_backs_off_and_a_revoked_credential_disables_until_it_changes() -> None:
    store = StateStore()
    source = _Counting(error=CredentialUnavailable("token endpoint answered 503"))
    tokens, account = Tokens(store), _account(source)
    http = aiohttp.ClientSession()
    try:
        first = await tokens.obtain(account, http)
        second = await tokens.obtain(account, http)
        assert isinstance(first, UpstreamFailure) and first.outcome == "connect_error"
        assert isinstance(second, UpstreamFailure) and "next refresh in" in second.message
        assert source.fetches == 1 and store.state("p/a").disabled == ""
        source.error = CredentialRevoked("token endpoint refused the grant: invalid_grant")
        tokens.cells["p/a"].retry_at = 0.0  # the backoff is over
        assert isinstance(await tokens.obtain(account, http), UpstreamFailure)
        assert isinstance(await tokens.obtain(account, http), UpstreamFailure)
        assert source.fetches == 2  # refused for good: never asked again
        assert store.state("p/a").disabled == "token endpoint refused the grant: invalid_grant"
        assert store.state("p/a").cooling_for("m", store.clock()) == float("inf")
        tokens.keep([account])  # a reload with the same credential: still disabled
        assert store.state("p/a").disabled
        changed = Account("p", "a", "a@x", "", 1, _Counting(), None, "fp-2", "oauth2_refresh_token")
        tokens.keep([changed])
        assert store.state("p/a").disabled == ""
        assert isinstance(await tokens.obtain(changed, http), dict)
    finally:
        await http.close()
