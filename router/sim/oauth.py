"""A fake OAuth2 token server (RFC 6749) in the simulator: ``POST /oauth2/token``, for tests and
local runs of token accounts (never the internet).

- ``grant_type=refresh_token``: any refresh token it has not revoked (those it issued, or any other:
  a test's configured one) gets an access token ``sim-at-<n>`` living ``lifetime`` seconds; with
  ``rotate`` the answer carries a new refresh token and the presented one is revoked (RFC 6749
  section 6, strict rotation: reusing it answers ``invalid_grant``).
- ``grant_type=client_credentials``: any client, unless ``clients`` registers its secret.
- :meth:`OAuthState.revoke` (or ``revoke_all``) makes a refresh token answer ``invalid_grant``;
  ``fail_next`` answers that many requests with a 503 (a transient outage); ``delay`` holds every
  answer (concurrency tests); ``requests`` counts token requests by grant type.
- Issued access tokens are checked where the dialects read a bearer token (:func:`refused`): one
  that looks issued here (``sim-at-``) but is unknown or expired gets a 401, as a real upstream would.

``GET /_sim/oauth`` shows the counts; ``POST /_sim/oauth`` sets lifetime / rotate / delay / fail_next
/ revoke_all for a simulator in another process.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

ISSUED_PREFIX = "sim-at-"
ISSUED_MAX = 100_000  # access tokens remembered (oldest forgotten first): a long-running simulator stays bounded


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(slots=True)
class OAuthState:
    """The token server's knobs and what it issued."""

    lifetime: float = 3600.0
    rotate: bool = False
    delay: float = 0.0
    fail_next: int = 0
    revoke_all: bool = False  # every refresh token answers invalid_grant
    clients: dict[str, str] = field(default_factory=dict)  # client_id -> secret (unlisted: any secret)
    revoked: set[str] = field(default_factory=set)
    issued: dict[str, float] = field(default_factory=dict)  # access token -> expires at (time.time())
    requests: dict[str, int] = field(default_factory=dict)  # grant type -> count
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def revoke(self, refresh_token: str) -> None:
        self.revoked.add(refresh_token)

    def valid(self, access_token: str) -> bool:
        """Whether the token was issued here and has not expired."""
        return self.issued.get(access_token, 0.0) > time.time()

    def expire_all(self) -> None:
        """Every access token issued so far is expired from now on (the upstream side of an expiry)."""
        for token in self.issued:
            self.issued[token] = 0.0

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's status and JSON answer for one form."""
        grant = form.get("grant_type", "")
        self.requests[grant] = self.requests.get(grant, 0) + 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return 503, {"error": "temporarily_unavailable"}
        secret = self.clients.get(form.get("client_id", ""))
        if secret is not None and form.get("client_secret") != secret:
            return 401, {"error": "invalid_client"}
        if grant == "client_credentials":
            return 200, self._issue(None)
        if grant == JWT_BEARER:  # a service account's signed assertion (RFC 7523): its shape, not its signature
            if form.get("assertion", "").count(".") != 2:
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT."}
            return 200, self._issue(None)
        if grant != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        presented = form.get("refresh_token", "")
        if not presented or self.revoke_all or presented in self.revoked:
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
        if self.rotate:
            self.revoked.add(presented)
            return 200, self._issue(f"sim-rt-{next(self._serial)}")
        return 200, self._issue(None)

    def _issue(self, refresh_token: str | None) -> dict[str, Any]:
        token = f"{ISSUED_PREFIX}{next(self._serial)}"
        while len(self.issued) >= ISSUED_MAX:
            del self.issued[next(iter(self.issued))]
        self.issued[token] = time.time() + self.lifetime
        out: dict[str, Any] = {"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}
        if refresh_token:
            out["refresh_token"] = refresh_token
        return out


OAUTH: web.AppKey[OAuthState] = web.AppKey("sim_oauth", OAuthState)


def refused(app: web.Application, key: str | None) -> bool:
    """A bearer token that looks issued by this token server but is unknown or expired."""
    return key is not None and key.startswith(ISSUED_PREFIX) and not app[OAUTH].valid(key)


async def token(request: web.Request) -> web.Response:
    state = request.app[OAUTH]
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    if state.delay:
        await asyncio.sleep(state.delay)
    status, body = state.answer(form)
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def show(request: web.Request) -> web.Response:
    state = request.app[OAUTH]
    return web.Response(body=orjson.dumps({"requests": state.requests, "issued": len(state.issued)}),
                        content_type="application/json")


async def configure(request: web.Request) -> web.Response:
    state = request.app[OAUTH]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    for name in ("lifetime", "delay"):
        if isinstance(body.get(name), int | float):
            setattr(state, name, float(body[name]))
    for name in ("rotate", "revoke_all"):
        if isinstance(body.get(name), bool):
            setattr(state, name, body[name])
    if isinstance(body.get("fail_next"), int):
        state.fail_next = body["fail_next"]
    return web.Response(body=orjson.dumps({"ok": True}), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app[OAUTH] = OAuthState()
    app.router.add_post("/oauth2/token", token)
    app.router.add_get("/_sim/oauth", show)
    app.router.add_post("/_sim/oauth", configure)
