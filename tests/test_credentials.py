"""router.credentials: the token-endpoint exchange every token kind shares, against a local server."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from router.credentials import (
    DEFAULT_LIFETIME,
    MAX_LIFETIME,
    TOKEN_ANSWER_LIMIT,
    CredentialRevoked,
    CredentialUnavailable,
    Token,
    post_token_form,
)


async def _server(aiohttp_server, handler):  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_post("/token", handler)
    return await aiohttp_server(app)


async def _post(server, **kw) -> Token:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        return await post_token_form(http, str(server.make_url("/token")), {"grant_type": "refresh_token"}, **kw)


async def test_a_token_answer_is_read_with_its_lifetime_and_rotated_refresh_token(aiohttp_server) -> None:
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(await request.post())
        return web.json_response({"access_token": "at-1", "expires_in": 120, "refresh_token": "rt-2",
                                  "token_type": "Bearer"})

    before = time.time()
    token = await _post(await _server(aiohttp_server, handler))
    assert seen == {"grant_type": "refresh_token"}
    assert (token.access_token, token.refresh_token) == ("at-1", "rt-2")
    assert before + 120 <= token.expires_at <= time.time() + 120
    assert token.fresh(before, 60) and not token.fresh(before + 61, 60)
    assert "at-1" not in repr(token) and "rt-2" not in repr(token)


@pytest.mark.parametrize(("expires_in", "lifetime"), [
    (None, DEFAULT_LIFETIME), ("90", 90.0), ("soon", DEFAULT_LIFETIME), (10**12, MAX_LIFETIME), (-5, 0.0),
    (True, DEFAULT_LIFETIME)])
async def test_expires_in_is_bounded(aiohttp_server, expires_in: object, lifetime: float) -> None:
    async def handler(request: web.Request) -> web.Response:
        answer = {"access_token": "at"} if expires_in is None else {"access_token": "at", "expires_in": expires_in}
        return web.json_response(answer)

    now = time.time()
    token = await _post(await _server(aiohttp_server, handler))
    assert now + lifetime - 1 <= token.expires_at <= time.time() + lifetime


@pytest.mark.parametrize("code", ["invalid_grant", "invalid_client", "unauthorized_client"])
async def test_a_permanent_refusal_revokes_and_names_only_the_code(aiohttp_server, code: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": code, "error_description": "secret-rt-123 is expired"}, status=400)

    with pytest.raises(CredentialRevoked) as e:
        await _post(await _server(aiohttp_server, handler))
    assert code in str(e.value) and "secret-rt-123" not in str(e.value)


@pytest.mark.parametrize(("status", "body", "words"), [
    (500, b'{"error": "server_error"}', "500 with error server_error"),
    (503, b"<html>down</html>", "503 with no access_token"),
    (200, b'{"token": "x"}', "no access_token"),
    (200, b'{"access_token": 5}', "malformed access_token"),
    (200, b'{"access_token": ""}', "malformed access_token"),
    (400, b'{"error": "temporarily_unavailable"}', "error temporarily_unavailable"),
])
async def test_a_bad_answer_is_transient(aiohttp_server, status: int, body: bytes, words: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type="application/json")

    with pytest.raises(CredentialUnavailable, match=words):
        await _post(await _server(aiohttp_server, handler))


async def test_an_oversized_answer_is_refused(aiohttp_server) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (TOKEN_ANSWER_LIMIT + 1))

    with pytest.raises(CredentialUnavailable, match="over"):
        await _post(await _server(aiohttp_server, handler))


async def test_a_slow_server_times_out(aiohttp_server) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"access_token": "late"})

    with pytest.raises(CredentialUnavailable, match="timed out"):
        await _post(await _server(aiohttp_server, handler), timeout=0.2)


async def test_an_unreachable_server_is_transient(unused_tcp_port: int) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(CredentialUnavailable, match="unreachable"):
            await post_token_form(http, f"http://127.0.0.1:{unused_tcp_port}/token", {"grant_type": "x"})
