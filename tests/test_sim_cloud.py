"""The simulator's Vertex AI and Azure OpenAI paths: the answers of the Gemini, Anthropic and OpenAI paths,
behind the checks the clouds' front ends make (bearer token, api-key, api-version) in their error shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from router.sim import SimServer
from router.sim.vertex import ANTHROPIC_VERSION

TOKEN = "ya29.issued-by-the-token-server"
VERTEX = "/v1/projects/proj-1/locations/us-east5/publishers"
AZURE = "/openai/deployments/my-gpt4o/chat/completions"
CHAT = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
async def sim() -> AsyncIterator[tuple[SimServer, aiohttp.ClientSession]]:
    async with SimServer(tokens=[TOKEN], api_keys=["azure-key-1"]) as server, aiohttp.ClientSession() as http:
        yield server, http


async def _post(sim: tuple[SimServer, aiohttp.ClientSession], path: str, body: Any,
                headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    server, http = sim
    async with http.post(server.url + path, json=body, headers=headers or {}) as r:
        text = await r.text()
        return r.status, (await r.json() if r.content_type == "application/json" else None), text


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
CLAUDE_BODY = {"anthropic_version": ANTHROPIC_VERSION, "max_tokens": 50,
               "messages": [{"role": "user", "content": "hello"}]}


async def test_vertex_gemini_answers_like_gemini_for_an_accepted_token(sim: Any) -> None:
    status, doc, _ = await _post(sim, f"{VERTEX}/google/models/gemini-2.5-flash:generateContent", GEMINI_BODY,
                                 _bearer())
    assert status == 200 and doc["candidates"][0]["content"]["parts"][0]["text"]
    assert doc["modelVersion"] == "gemini-2.5-flash"
    status, _, text = await _post(sim, f"{VERTEX}/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                                  GEMINI_BODY, _bearer())
    assert status == 200 and text.startswith("data: ") and '"finishReason":"STOP"' in text
    status, doc, _ = await _post(sim, f"{VERTEX}/google/models/gemini-2.5-flash:countTokens", GEMINI_BODY, _bearer())
    assert status == 200 and doc["totalTokens"] > 0


@pytest.mark.parametrize("publisher", ["google/models/gemini-2.5-flash:generateContent",
                                       "anthropic/models/claude-sonnet-4-5@20250929:rawPredict"])
@pytest.mark.parametrize(("headers", "word"), [
    ({}, "missing required authentication credential"),
    ({"Authorization": "Bearer ya29.not-issued"}, "invalid authentication credentials"),
    ({"x-goog-api-key": TOKEN}, "missing required authentication credential"),  # Vertex takes no API key
], ids=["no-token", "unknown-token", "api-key-header"])
async def test_vertex_refuses_a_missing_or_unknown_token_in_googles_shape(sim: Any, publisher: str,
                                                                          headers: dict[str, str], word: str) -> None:
    server, _ = sim
    body = GEMINI_BODY if publisher.startswith("google") else CLAUDE_BODY
    server.add_faults("ya29.not-issued", {"status": 503})
    status, doc, _ = await _post(sim, f"{VERTEX}/{publisher}", body, headers)
    assert status == 401
    assert doc["error"]["code"] == 401 and doc["error"]["status"] == "UNAUTHENTICATED"
    assert word in doc["error"]["message"]
    assert server.requests()[-1]["status"] == 401
    if "Authorization" in headers:  # a refused request takes none of the faults queued for its token
        assert server.state.faults.pending() == {"ya29.not-issued": 1}


async def test_vertex_claude_answers_like_anthropic_with_the_model_from_the_url(sim: Any) -> None:
    model = "claude-sonnet-4-5@20250929"
    status, doc, _ = await _post(sim, f"{VERTEX}/anthropic/models/{model}:rawPredict", CLAUDE_BODY, _bearer())
    assert status == 200 and doc["type"] == "message" and doc["model"] == model
    assert doc["content"][0]["type"] == "text"
    status, _, text = await _post(sim, f"{VERTEX}/anthropic/models/{model}:streamRawPredict",
                                  {**CLAUDE_BODY, "stream": True}, _bearer())
    assert status == 200 and "event: message_start" in text and "event: message_stop" in text


@pytest.mark.parametrize(("action", "change", "message"), [
    ("rawPredict", {"anthropic_version": None}, "anthropic_version: Input should be 'vertex-2023-10-16'"),
    ("rawPredict", {"anthropic_version": "2023-06-01"}, "anthropic_version"),
    ("rawPredict", {"model": "claude-sonnet-4-5"}, "model: Extra inputs are not permitted"),
    ("rawPredict", {"stream": True}, "stream: must be false or absent for rawPredict"),
    ("streamRawPredict", {}, "stream: must be true for streamRawPredict"),
])
async def test_vertex_claude_checks_the_vertex_body(sim: Any, action: str, change: dict[str, Any],
                                                   message: str) -> None:
    body = {k: v for k, v in {**CLAUDE_BODY, **change}.items() if v is not None}
    status, doc, _ = await _post(sim, f"{VERTEX}/anthropic/models/claude-sonnet-4-5:{action}", body, _bearer())
    assert status == 400 and doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
    assert message in doc["error"]["message"]


async def test_vertex_unknown_method_is_a_404(sim: Any) -> None:
    status, doc, _ = await _post(sim, f"{VERTEX}/anthropic/models/claude:predictLongRunning", CLAUDE_BODY, _bearer())
    assert status == 404 and doc["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize("headers", [{"api-key": "azure-key-1"}, {"api-key": "sim-key-azure"}, _bearer()],
                         ids=["api-key", "sim-api-key", "entra-token"])
async def test_azure_answers_like_openai_for_an_accepted_credential(sim: Any, headers: dict[str, str]) -> None:
    status, doc, _ = await _post(sim, AZURE + "?api-version=2024-10-21", CHAT, headers)
    assert status == 200 and doc["object"] == "chat.completion"
    assert doc["model"] == "my-gpt4o"  # no model in the body: the deployment's
    status, _, text = await _post(sim, AZURE + "?api-version=2024-10-21", {**CHAT, "model": "gpt-4o", "stream": True},
                                  headers)
    assert status == 200 and text.rstrip().endswith("data: [DONE]") and '"model":"gpt-4o"' in text


@pytest.mark.parametrize(("query", "headers", "status", "code", "word"), [
    ("", {"api-key": "azure-key-1"}, 400, "BadRequest", "api-version"),
    ("?api-version=2099-01-01", {"api-key": "azure-key-1"}, 400, "BadRequest", "API version not supported"),
    ("?api-version=2024-10-21", {"api-key": "wrong"}, 401, "401", "invalid subscription key"),
    ("?api-version=2024-10-21", {}, 401, "401", "Access token is missing"),
    ("?api-version=2024-10-21", _bearer("eyJ.not-issued"), 401, "401", "Access token is missing, invalid"),
    ("?api-version=2024-10-21", {"api-key": "wrong", **_bearer()}, 401, "401", "invalid subscription key"),
], ids=["no-version", "unknown-version", "bad-key", "no-credential", "unknown-token", "bad-key-beside-token"])
async def test_azure_front_end_refusals_in_azures_shape(sim: Any, query: str, headers: dict[str, str], status: int,
                                                        code: str, word: str) -> None:
    got, doc, _ = await _post(sim, AZURE + query, CHAT, headers)
    assert (got, doc["error"]["code"]) == (status, code) and word in doc["error"]["message"]
    assert set(doc["error"]) == {"code", "message"}


async def test_azure_faults_and_errors_past_the_front_end_are_openai_shaped(sim: Any) -> None:
    server, _ = sim
    server.add_faults("azure-key-1", {"status": 429, "retry_after": 1})
    status, doc, _ = await _post(sim, AZURE + "?api-version=2024-10-21", CHAT, {"api-key": "azure-key-1"})
    assert status == 429 and doc["error"]["code"] == "rate_limit_exceeded"
    status, doc, _ = await _post(sim, AZURE + "?api-version=2024-10-21", {"messages": []}, {"api-key": "azure-key-1"})
    assert status == 400 and doc["error"]["type"] == "invalid_request_error"


async def test_credentials_are_added_through_the_control_api(sim: Any) -> None:
    server, http = sim
    path = f"{VERTEX}/google/models/gemini-2.5-flash:generateContent"
    assert (await _post(sim, path, GEMINI_BODY, _bearer("ya29.later")))[0] == 401
    async with http.post(server.url + "/_sim/credentials", json={"tokens": ["ya29.later"]}) as r:
        assert r.status == 200 and (await r.json()) == {"tokens": 2, "api_keys": 1}
    assert (await _post(sim, path, GEMINI_BODY, _bearer("ya29.later")))[0] == 200
    server.reset()  # faults and the log go; the credentials stay
    assert (await _post(sim, path, GEMINI_BODY, _bearer("ya29.later")))[0] == 200
    for bad in ({"tokens": "x"}, {"api_keys": [""]}, [1]):
        async with http.post(server.url + "/_sim/credentials", json=bad) as r:
            assert r.status == 400


async def test_the_other_paths_still_take_any_key(sim: Any) -> None:
    status, _, _ = await _post(sim, "/v1/chat/completions", {**CHAT, "model": "gpt-4o"}, _bearer("anything"))
    assert status == 200
