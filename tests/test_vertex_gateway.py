"""Vertex AI end to end: the official SDKs against the gateway, the gateway's service account against a local
token endpoint (which verifies the signed assertion), its token against the simulator's Vertex paths.

Runs once the credentials core registers the ``google_service_account`` kind (router.credential_kinds.KINDS)."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from router.credential_google import GRANT_TYPE
from tests.conftest import Harness, copy_routes, start_gateway

TOKEN = "ya29.e2e-token"
VERTEX = """
providers:
  vertex:
    dialect: gemini
    base_url: builtin:simulator
    template: {default: vertex-gemini, gemini: vertex-gemini-passthrough}
    params: {project: proj-1, location: us-east5}
    accounts:
      - email: sa@proj-1.iam.gserviceaccount.com
        credential: {type: google_service_account, key: "${file:secrets/sa.json}"}
  vertex-claude:
    dialect: anthropic
    base_url: builtin:simulator
    template: vertex-anthropic
    params: {project: proj-1, location: us-east5}
    accounts:
      - email: sa@proj-1.iam.gserviceaccount.com
        credential: {type: google_service_account, key: "${file:secrets/sa.json}"}
model_mapping:
  exact:
    vgemini: vertex/gemini-2.5-flash
    vclaude: vertex-claude/claude-sonnet-4-5@20250929
"""


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenEndpoint:
    """Google's token endpoint, as far as a service account sees it: a jwt-bearer grant whose assertion
    verifies with the account's public key and names this endpoint as its audience."""

    def __init__(self, key: rsa.RSAPrivateKey, token: str) -> None:
        self.public = key.public_key()
        self.token = token
        self.url = ""
        self.grants = 0

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        head, claims, signature = str(form["assertion"]).split(".")
        self.public.verify(_b64(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
        body = orjson.loads(_b64(claims))
        assert form["grant_type"] == GRANT_TYPE and body["aud"] == self.url and body["exp"] > time.time()
        self.grants += 1
        return web.json_response({"access_token": self.token, "expires_in": 3599, "token_type": "Bearer"})


async def _gateway(tmp_path: Path, aiohttp_server: Any, token: str) -> tuple[Harness, TokenEndpoint]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    endpoint = TokenEndpoint(key, token)
    app = web.Application()
    app.router.add_post("/token", endpoint.handle)
    server = await aiohttp_server(app)
    endpoint.url = str(server.make_url("/token"))
    config = copy_routes(tmp_path / "routes.d")
    (config / "secrets").mkdir()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    (config / "secrets" / "sa.json").write_bytes(orjson.dumps({
        "type": "service_account", "client_email": "sa@proj-1.iam.gserviceaccount.com", "private_key_id": "k1",
        "private_key": pem, "token_uri": endpoint.url}))
    (config / "80-vertex.yaml").write_text(VERTEX)
    return await start_gateway(config, sim_options={"tokens": [TOKEN]}), endpoint


@pytest.fixture
async def vertex(tmp_path: Path, aiohttp_server: Any) -> AsyncIterator[tuple[Harness, TokenEndpoint]]:
    h, endpoint = await _gateway(tmp_path, aiohttp_server, TOKEN)
    try:
        yield h, endpoint
    finally:
        await h.close()


async def test_sdks_reach_gemini_and_claude_on_vertex_with_the_service_accounts_token(vertex: Any) -> None:
    h, endpoint = vertex
    chat = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-test", max_retries=0)
    done = await chat.chat.completions.create(model="vgemini", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content
    stream = await chat.chat.completions.create(model="vclaude", stream=True,
                                                messages=[{"role": "user", "content": "hi"}])
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    messages = anthropic.AsyncAnthropic(base_url=h.url, api_key="sk-test", max_retries=0)
    reply = await messages.messages.create(model="vclaude", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert reply.content[0].type == "text"
    seen = await h.sim_requests()
    prefix = "/v1/projects/proj-1/locations/us-east5/publishers"
    assert [(r["path"], r["key"], r["status"]) for r in seen] == [
        (f"{prefix}/google/models/gemini-2.5-flash:generateContent", TOKEN, 200),
        (f"{prefix}/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict", TOKEN, 200),
        (f"{prefix}/anthropic/models/claude-sonnet-4-5@20250929:rawPredict", TOKEN, 200)]
    assert "model" not in seen[2]["body"] and seen[2]["body"]["anthropic_version"] == "vertex-2023-10-16"
    assert endpoint.grants == 2  # one token per account, cached across requests


async def test_a_token_vertex_refuses_is_refreshed_once_then_the_client_gets_the_401(tmp_path: Path,
                                                                                    aiohttp_server: Any) -> None:
    h, endpoint = await _gateway(tmp_path, aiohttp_server, "ya29.not-accepted")
    try:
        chat = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-test", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            await chat.chat.completions.create(model="vgemini", messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 401 and "ya29" not in str(err.value)
        assert endpoint.grants == 2  # the first token, and the one refresh a 401 forces
    finally:
        await h.close()
