"""Token accounts through the real gateway and its HTTP API, against the simulator's fake OAuth2 token
server: expiry and refresh, refresh-ahead, rotation, invalid_grant, a 401's one retry, single flight,
and no secret anywhere it could leak."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.accounts import Account
from router.sim import SimServer
from router.upstream_request import UpstreamRequest
from tests.conftest import Harness, start_gateway
from tests.token_gateway import CHAT, CLIENT_SECRET, age, gateway, refresh_account, tokens_used, write_config


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(port=0) as s:
        yield s


async def _chat(h: Harness) -> tuple[int, dict[str, object]]:
    status, doc, _ = await h.post_json("/v1/chat/completions", CHAT)
    return status, doc


async def _accounts(h: Harness) -> dict[str, dict[str, object]]:
    return {a["email"]: a for a in (await (await h.request("GET", "/admin/accounts")).json())["accounts"]}


async def test_a_token_account_sends_its_bearer_token_and_refreshes_it_once_expired(tmp_path: Path, sim: SimServer
                                                                                   ) -> None:
    sim.oauth.lifetime = 3600
    h = await gateway(tmp_path / "c", sim, [refresh_account("alice@example.com", "rt-alice", sim)])
    try:
        for _ in range(3):
            assert (await _chat(h))[0] == 200
        assert sim.oauth.requests == {"refresh_token": 1}  # cached: one token for three requests
        assert tokens_used(sim) == ["sim-at-1"] * 3
        got = [r for r in sim.requests() if r["path"].startswith("/v1beta/")]
        assert all(r["key"] == "sim-at-1" for r in got)
        sim.oauth.expire_all()  # the upstream refuses it from now on, and the gateway knows it is past
        age(h, 3600)
        assert (await _chat(h))[0] == 200
        assert sim.oauth.requests == {"refresh_token": 2}
        assert tokens_used(sim)[-1] not in (None, "sim-at-1")
        accounts = await _accounts(h)
        assert accounts["alice@example.com"]["state"] == "ok"
        assert accounts["alice@example.com"]["credential"] == "oauth2_refresh_token"
    finally:
        await h.close()


def test_the_shipped_gemini_templates_send_a_bearer_token_for_a_token_account_and_the_key_otherwise() -> None:
    from router.canonical import CanonicalRequest
    from router.exchange import ClientHeaders
    from router.registry import template_filters
    from router.snapshot import build
    from router.upstream_request import render_request
    from tests.conftest import ROUTES

    snap, _ = build(ROUTES, 1, template_filters())
    provider = snap.providers["simulator"]
    account = provider.pool.accounts[0]
    req = CanonicalRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    for template in (provider.template, provider.inbound_templates["gemini"]):
        def headers(view: dict[str, str]) -> dict[str, str]:
            ctx = {"request": req, "model": "m", "stream": False, "client_headers": ClientHeaders({}),
                   "provider": provider.template_view, "account": view}
            return render_request(template, ctx, provider.base_url).headers  # noqa: B023 - used at once

        keyed = headers(account.template_view)
        assert keyed == {"Content-Type": "application/json", "User-Agent": keyed["User-Agent"],
                         "x-goog-api-key": "sim-key-a"}  # as before: no Authorization header at all
        token = headers({"email": "a", "id": "a", "api_key": "", "access_token": "at-1"})
        assert token["Authorization"] == "Bearer at-1" and "x-goog-api-key" not in token


async def test_refresh_ahead_serves_the_current_token_while_one_refresh_runs(tmp_path: Path, sim: SimServer) -> None:
    sim.oauth.lifetime = 3600
    h = await gateway(tmp_path / "c", sim, [refresh_account("alice@example.com", "rt-alice", sim)])
    try:
        assert (await _chat(h))[0] == 200
        age(h, 3600 - 30)  # inside the refresh margin (60 s), not yet expired
        assert (await _chat(h))[0] == 200
        assert tokens_used(sim) == ["sim-at-1", "sim-at-1"]  # served at once with the current token
        for _ in range(100):
            if sim.oauth.requests.get("refresh_token") == 2:
                break
            await asyncio.sleep(0.02)
        assert sim.oauth.requests == {"refresh_token": 2}  # refreshed in the background, once
        assert (await _chat(h))[0] == 200
        assert tokens_used(sim)[-1] == "sim-at-2"
        assert sim.oauth.requests == {"refresh_token": 2}
    finally:
        await h.close()


async def test_a_rotated_refresh_token_is_used_from_then_on_also_after_a_reload(tmp_path: Path, sim: SimServer
                                                                               ) -> None:
    sim.oauth.rotate = True  # strict rotation: the refresh token used is revoked by the answer
    h = await gateway(tmp_path / "c", sim, [refresh_account("alice@example.com", "rt-alice", sim)])
    try:
        assert (await _chat(h))[0] == 200
        assert "rt-alice" in sim.oauth.revoked
        age(h, 7200)
        assert (await _chat(h))[0] == 200  # the configured rt-alice would answer invalid_grant now
        assert (await (await h.request("POST", "/admin/reload")).json())["reloaded"]  # unchanged credential: kept
        age(h, 14400)
        assert (await _chat(h))[0] == 200
        assert sim.oauth.requests == {"refresh_token": 3}
        assert (await _accounts(h))["alice@example.com"]["state"] == "ok"
    finally:
        await h.close()


async def test_invalid_grant_disables_the_account_and_the_next_one_serves(tmp_path: Path, sim: SimServer,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim.oauth.revoke("rt-alice")
    accounts = [refresh_account("alice@example.com", "rt-alice", sim),
                refresh_account("bob@example.com", "rt-bob", sim)]
    h = await gateway(tmp_path / "c", sim, accounts)
    try:
        for _ in range(4):
            assert (await _chat(h))[0] == 200
        assert sim.oauth.requests == {"refresh_token": 2}  # alice's refusal once (not retried), bob's token once
        shown = await _accounts(h)
        assert shown["alice@example.com"]["state"] == "disabled"
        assert "invalid_grant" in str(shown["alice@example.com"]["disabled"])
        assert shown["bob@example.com"]["state"] == "ok"
        metrics = await (await h.request("GET", "/metrics")).text()
        assert 'router_account_credentials_revoked_total{account="alice@example.com",provider="gtok"} 1.0' in metrics
        assert 'router_token_refreshes_total{provider="gtok",result="revoked"} 1.0' in metrics
        explained = await (await h.request("POST", "/admin/explain", json={"model": "tok-model"})).text()
        assert '"state":"disabled"' in explained.replace(" ", ""), explained
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "disabled" in r.getMessage()]
        assert len(warnings) == 1 and "invalid_grant" in warnings[0].getMessage()
        # a reload that changes alice's credential gives it a new chance
        new = [refresh_account("alice@example.com", "rt-alice-2", sim), accounts[1]]
        write_config(tmp_path / "c", sim, new)
        assert (await (await h.request("POST", "/admin/reload")).json())["reloaded"]
        assert (await _accounts(h))["alice@example.com"]["state"] == "ok"
        for _ in range(2):
            assert (await _chat(h))[0] == 200
        assert sim.oauth.requests == {"refresh_token": 3}
    finally:
        await h.close()


async def test_a_provider_whose_accounts_are_all_disabled_answers_a_clear_503(tmp_path: Path, sim: SimServer) -> None:
    sim.oauth.revoke_all = True
    h = await gateway(tmp_path / "c", sim, [refresh_account("alice@example.com", "rt-alice", sim)])
    try:
        status, doc = await _chat(h)
        assert status == 502 and "invalid_grant" in doc["error"]["message"]  # type: ignore[index]
        status, doc = await _chat(h)
        assert status == 503, doc
        message = doc["error"]["message"]  # type: ignore[index]
        assert "'gtok'" in message and "disabled" in message and "Traceback" not in message
        assert sim.oauth.requests == {"refresh_token": 1}
    finally:
        await h.close()


async def test_a_fallback_list_moves_on_from_a_provider_whose_accounts_are_all_disabled(tmp_path: Path,
                                                                                        sim: SimServer) -> None:
    sim.oauth.revoke_all = True
    mapping = "model_mapping: {default: [gtok/gemini-2.5-flash, gkey/gemini-2.5-flash]}\n"
    config = write_config(tmp_path / "c", sim, [refresh_account("alice@example.com", "rt-alice", sim)], "", mapping)
    h = await start_gateway(config)
    try:
        for _ in range(3):
            status, _, headers = await h.post_json("/v1/chat/completions", CHAT)
            assert status == 200 and headers["X-Account-Email"] == "keyed@x"
        assert sim.oauth.requests == {"refresh_token": 1}
    finally:
        await h.close()


async def test_a_401_forces_one_refresh_and_one_retry_on_the_same_account(tmp_path: Path, sim: SimServer) -> None:
    accounts = [refresh_account("alice@example.com", "rt-alice", sim),
                refresh_account("bob@example.com", "rt-bob", sim)]
    h = await gateway(tmp_path / "c", sim, accounts)
    try:
        assert (await _chat(h))[0] == 200  # alice: sim-at-1
        assert (await _chat(h))[0] == 200  # bob: sim-at-2
        sim.add_faults("sim-at-1", {"status": 401})
        assert (await _chat(h))[0] == 200  # alice again: refused, refreshed, retried
        assert tokens_used(sim) == ["sim-at-1", "sim-at-2", "sim-at-1", "sim-at-3"]
        assert sim.oauth.requests == {"refresh_token": 3}
        shown = await _accounts(h)
        assert shown["alice@example.com"]["state"] == "ok" and shown["alice@example.com"]["cooling_until"] is None
        sim.add_faults("*", {"status": 401, "times": 4})
        status, _ = await _chat(h)  # bob: refused twice (once with a new token): the 401 goes out, no loop
        assert status == 401
        assert len(tokens_used(sim)) == 6 and sim.oauth.requests == {"refresh_token": 4}
    finally:
        await h.close()


async def test_fifty_requests_on_an_expired_token_cause_one_refresh(tmp_path: Path, sim: SimServer) -> None:
    sim.oauth.delay = 0.3  # the refresh is slow: every request arrives while it runs
    h = await gateway(tmp_path / "c", sim, [refresh_account("alice@example.com", "rt-alice", sim)])
    try:
        statuses = await asyncio.gather(*(_chat(h) for _ in range(50)))
        assert [s for s, _ in statuses] == [200] * 50
        assert sim.oauth.requests == {"refresh_token": 1}
        age(h, 7200)  # expired: all wait on the same refresh
        statuses = await asyncio.gather(*(_chat(h) for _ in range(50)))
        assert [s for s, _ in statuses] == [200] * 50
        assert sim.oauth.requests == {"refresh_token": 2}
    finally:
        await h.close()


async def test_a_failed_refresh_fails_over_and_is_not_hammered(tmp_path: Path, sim: SimServer) -> None:
    sim.oauth.fail_next = 1000  # the token server is down: 503s
    accounts = [refresh_account("alice@example.com", "rt-alice", sim), {"email": "key@x", "api_key": "k-static"}]
    h = await gateway(tmp_path / "c", sim, accounts)
    try:
        for _ in range(6):
            assert (await _chat(h))[0] == 200  # the static-key account serves
        assert sim.oauth.requests == {"refresh_token": 1}  # then a backoff: no second try within a second
        assert (await _accounts(h))["alice@example.com"]["state"] == "ok"  # transient: not disabled
    finally:
        await h.close()


async def test_client_credentials_grant(tmp_path: Path, sim: SimServer) -> None:
    sim.oauth.clients["app-1"] = CLIENT_SECRET
    account = {"email": "entra-app", "credential": {
        "type": "oauth2_client_credentials", "token_url": f"{sim.url}/oauth2/token", "client_id": "app-1",
        "client_secret": CLIENT_SECRET, "scope": "https://cognitiveservices.azure.com/.default"}}
    h = await gateway(tmp_path / "c", sim, [account])
    try:
        assert (await _chat(h))[0] == 200
        assert sim.oauth.requests == {"client_credentials": 1}
        assert tokens_used(sim) == ["sim-at-1"]
    finally:
        await h.close()
    sim.oauth.clients["app-1"] = "another-secret"  # the client's secret was rotated at the server: disabled
    h = await gateway(tmp_path / "d", sim, [account])
    try:
        assert (await _chat(h))[0] == 502
        assert (await _accounts(h))["entra-app"]["state"] == "disabled"
    finally:
        await h.close()


async def test_no_token_or_secret_reaches_logs_errors_admin_or_metrics(tmp_path: Path, sim: SimServer,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim.oauth.rotate = True
    sim.oauth.revoke("rt-bad-secret")
    accounts = [refresh_account("alice@example.com", "rt-good-secret", sim),
                refresh_account("bob@example.com", "rt-bad-secret", sim)]
    h = await gateway(tmp_path / "c", sim, accounts)
    try:
        texts = [str(await _chat(h)) for _ in range(3)]
        sim.add_faults("*", {"status": 401, "times": 2})
        texts.append(str(await _chat(h)))
        sim.oauth.revoke_all = True
        age(h, 7200)
        texts.append(str(await _chat(h)))
        texts += [await (await h.request("GET", path)).text() for path in ("/admin/accounts", "/admin/config",
                                                                           "/metrics")]
    finally:
        await h.close()
    issued = [t for t in sim.oauth.issued]
    texts += [caplog.text, *(repr(r.__dict__) for r in caplog.records)]
    for secret in (CLIENT_SECRET, "rt-good-secret", "rt-bad-secret", "sim-rt-", *issued):
        assert not [t for t in texts if secret in t], secret


class _HeaderSigner:
    """A signer as the AWS SigV4 kind plugs in: it sees the rendered request and adds a header."""

    def __init__(self) -> None:
        self.signed: list[tuple[str, float]] = []

    def sign(self, request: UpstreamRequest, now: float) -> None:
        self.signed.append((request.url, now))
        request.headers["x-goog-api-key"] = f"signed-{len(self.signed)}"


async def test_a_signer_signs_each_rendered_request_just_before_it_is_sent(tmp_path: Path, sim: SimServer) -> None:
    h = await gateway(tmp_path / "c", sim, [{"email": "signed@x", "api_key": "k"}])
    try:
        signer = _HeaderSigner()
        pool = h.gateway.current.providers["gtok"].pool
        [acc] = pool.accounts
        pool.accounts = (Account(acc.provider, acc.id, acc.email, acc.api_key, signer=signer),)
        before = time.time()
        assert (await _chat(h))[0] == 200
        assert (await _chat(h))[0] == 200
    finally:
        await h.close()
    assert tokens_used(sim) == ["signed-1", "signed-2"]
    assert [url.endswith(":generateContent") and now >= before for url, now in signer.signed] == [True, True]


async def test_the_fake_token_server_is_configurable_over_http_and_refuses_what_it_should(sim: SimServer) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(sim.url + "/_sim/oauth", json={"lifetime": 5, "rotate": True, "fail_next": 1}) as r:
            assert r.status == 200
        form = {"grant_type": "refresh_token", "refresh_token": "rt-x", "client_id": "c"}
        async with s.post(sim.url + "/oauth2/token", data=form) as r:
            assert r.status == 503  # fail_next
        async with s.post(sim.url + "/oauth2/token", data=form) as r:
            answer = await r.json()
        assert answer["expires_in"] == 5 and answer["refresh_token"].startswith("sim-rt-")
        async with s.post(sim.url + "/oauth2/token", data=form) as r:  # rt-x was rotated away
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
        async with s.post(sim.url + "/oauth2/token", data={"grant_type": "password"}) as r:
            assert (await r.json())["error"] == "unsupported_grant_type"
        async with s.get(sim.url + "/_sim/oauth") as r:
            assert (await r.json())["requests"] == {"refresh_token": 3, "password": 1}
        token = answer["access_token"]
        body = {"contents": [{"parts": [{"text": "hi"}]}]}
        url = sim.url + "/v1beta/models/m:generateContent"
        async with s.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        sim.oauth.expire_all()
        async with s.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401
        async with s.post(url, json=body, headers={"Authorization": "Bearer sim-at-unknown"}) as r:
            assert r.status == 401
