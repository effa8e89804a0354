"""Google Vertex AI as the simulator speaks it: Gemini and Claude behind a bearer token.

``/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`` (and
``:streamGenerateContent?alt=sse``, ``:countTokens``) answer as the Gemini paths do;
``.../publishers/anthropic/models/{model}:rawPredict`` and ``:streamRawPredict`` as the Anthropic
Messages path, for a body without ``model`` (it is in the URL) and with ``anthropic_version:
vertex-2023-10-16``. Google's front end checks the token first: a missing or unknown one is a 401 in
Google's error shape whichever publisher was asked (the tokens accepted: ``SimState.credentials``).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from router.sim import anthropic, gemini
from router.sim.exchange import Answer, Dialect, Endpoint, Incoming, error_response, serve
from router.sim.state import STATE

ANTHROPIC_VERSION = "vertex-2023-10-16"
PREFIX = "/v1/projects/{project}/locations/{location}/publishers"
MISSING = ("Request is missing required authentication credential. Expected OAuth 2 access token, login cookie "
           "or other valid authentication credential. See "
           "https://developers.google.com/identity/sign-in/web/devconsole-project.")
INVALID = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
           "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")


def bearer_of(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _google_refusal(request: web.Request) -> web.Response | None:
    """Google's front end: no token, or one no token server issued, is UNAUTHENTICATED."""
    token = bearer_of(request)
    if token is not None and request.app[STATE].credentials.token_ok(token):
        return None
    return error_response(GEMINI, 401, INVALID if token else MISSING)


GEMINI = Dialect(name="vertex-gemini", key_of=bearer_of, error_body=gemini.error_body, missing_key_status=401,
                 request_id_header="x-request-id", sse_separator=gemini.SEPARATOR, refuse=_google_refusal)
ANTHROPIC = Dialect(name="vertex-anthropic", key_of=bearer_of, error_body=anthropic.error_body,
                    missing_key_status=401, request_id_header="request-id", refuse=_google_refusal)


def _split(request: web.Request) -> tuple[str, str]:
    """``claude-sonnet-4-5@20250929:rawPredict`` -> (model, action)."""
    model, _, action = request.match_info["tail"].partition(":")
    return model, action


def _describe_claude(request: web.Request, body: Any) -> tuple[str | None, bool]:
    model, action = _split(request)
    return model, action == "streamRawPredict"


def _predict(incoming: Incoming) -> Answer:
    """The Messages answer for Vertex's body: the model comes from the URL, never the body."""
    body = incoming.body
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    if body.get("anthropic_version") != ANTHROPIC_VERSION:
        raise ValueError(f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'")
    if "model" in body:
        raise ValueError("model: Extra inputs are not permitted")
    model, action = _split(incoming.request)
    if bool(body.get("stream")) != (action == "streamRawPredict"):
        raise ValueError(f"stream: must be {'true' if action == 'streamRawPredict' else 'false or absent'} "
                         f"for {action}")
    messages = anthropic.MESSAGES.handle
    return messages(Incoming(incoming.request, {**body, "model": model}, incoming.options))


GEMINI_ACTIONS = {action: Endpoint(GEMINI, e.describe, e.handle, e.faults) for action, e in gemini.ACTIONS.items()}
CLAUDE_ACTIONS = {action: Endpoint(ANTHROPIC, _describe_claude, _predict) for action in
                  ("rawPredict", "streamRawPredict")}


async def _dispatch(request: web.Request, actions: dict[str, Endpoint]) -> web.StreamResponse:
    endpoint = actions.get(_split(request)[1])
    if endpoint is None:
        raise web.HTTPNotFound(text=orjson.dumps(gemini.error_body(404, "Unknown method.", None)).decode(),
                               content_type="application/json")
    return await serve(request, endpoint)


async def handle_gemini(request: web.Request) -> web.StreamResponse:
    return await _dispatch(request, GEMINI_ACTIONS)


async def handle_claude(request: web.Request) -> web.StreamResponse:
    return await _dispatch(request, CLAUDE_ACTIONS)


def add_routes(app: web.Application) -> None:
    app.router.add_post(PREFIX + "/google/models/{tail:.+}", handle_gemini)
    app.router.add_post(PREFIX + "/anthropic/models/{tail:.+}", handle_claude)
