"""Azure OpenAI as the simulator speaks it: deployment URLs, ``api-version``, ``api-key`` or Entra ID.

``/openai/deployments/{deployment}/chat/completions?api-version=...`` answers as the OpenAI chat path
(the deployment stands for the model when the body names none). Azure's front end checks first: the
``api-version`` query (missing or unknown: 400), then the credential, an ``api-key`` header or an
``Authorization: Bearer`` Entra ID token (missing or unknown: 401), each in Azure's error shape. The
keys and tokens accepted: ``SimState.credentials``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.sim import openai
from router.sim.exchange import Answer, Dialect, Endpoint, Incoming, json_response, serve
from router.sim.faults import Fault
from router.sim.state import STATE
from router.sim.vertex import bearer_of

# Azure OpenAI's data-plane inference versions (GA and preview) the simulator knows
API_VERSIONS = frozenset({
    "2023-05-15", "2024-02-01", "2024-06-01", "2024-10-21", "2024-02-15-preview", "2024-05-01-preview",
    "2024-08-01-preview", "2024-09-01-preview", "2024-10-01-preview", "2024-12-01-preview", "2025-01-01-preview",
    "2025-02-01-preview", "2025-03-01-preview", "2025-04-01-preview"})
BAD_KEY = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
           "for an active subscription and use a correct regional API endpoint for your resource.")
BAD_TOKEN = ("Unauthorized. Access token is missing, invalid, audience is incorrect "
             "(https://cognitiveservices.azure.com), or have expired.")


def key_of(request: web.Request) -> str | None:
    return request.headers.get("api-key") or bearer_of(request)


def _azure_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_body(status: int, message: str, fault: Fault | None) -> dict[str, Any]:
    """Past the front end, Azure answers in OpenAI's shape (its ``code`` a string)."""
    return openai.error_body(status, message, fault)


def _refusal(request: web.Request) -> web.Response | None:
    version = request.query.get("api-version")
    if not version:
        return json_response(_azure_error("BadRequest", "Missing required query parameter 'api-version'. Please "
                                          "provide a valid api-version."), DIALECT, 400)
    if version not in API_VERSIONS:
        return json_response(_azure_error("BadRequest", "API version not supported"), DIALECT, 400)
    credentials = request.app[STATE].credentials
    key = request.headers.get("api-key")
    if key is not None:
        return None if credentials.api_key_ok(key) else json_response(_azure_error("401", BAD_KEY), DIALECT, 401)
    token = bearer_of(request)
    if token is not None and credentials.token_ok(token):
        return None
    return json_response(_azure_error("401", BAD_TOKEN), DIALECT, 401)


DIALECT = Dialect(name="azure", key_of=key_of, error_body=error_body, missing_key_status=401,
                  request_id_header="apim-request-id", refuse=_refusal)


def _describe(request: web.Request, body: Any) -> tuple[str | None, bool]:
    model = body.get("model") if isinstance(body, dict) else None
    return (model if isinstance(model, str) else request.match_info["deployment"]), (
        isinstance(body, dict) and bool(body.get("stream")))


def _chat(incoming: Incoming) -> Answer:
    body = incoming.body
    if isinstance(body, dict) and "model" not in body:
        body = {**body, "model": incoming.request.match_info["deployment"]}
    return openai.CHAT.handle(Incoming(incoming.request, body, incoming.options))


CHAT = Endpoint(DIALECT, _describe, _chat)


async def handle_chat(request: web.Request) -> web.StreamResponse:
    return await serve(request, CHAT)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", handle_chat)

