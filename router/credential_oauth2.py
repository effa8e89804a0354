"""The two OAuth2 token sources (RFC 6749): a refresh token grant and a client credentials grant.

Both are one form POST through :func:`router.credentials.post_token_form`; the cache in
:mod:`router.tokens` decides when they run (one at a time per account). The client authenticates
with its id and secret in the form (``client_secret_post``), which Google and Microsoft Entra ID
both accept; a public client (no secret) sends its id alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from router.credentials import Token, post_token_form


@dataclass(slots=True, eq=False)
class RefreshTokenSource:
    """``grant_type=refresh_token`` (RFC 6749 section 6): Google OAuth as the seed's gateway used it,
    or any RFC 6749 server. A server that rotates refresh tokens answers with a new one: it replaces
    the old one here (the cache keeps this object across reloads that leave the credential alone)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)  # "" for a public client
    refresh_token: str = field(repr=False)  # the latest one: a rotated one replaces the configured one
    scope: str = ""

    async def fetch(self, http: aiohttp.ClientSession) -> Token:
        form = {"grant_type": "refresh_token", "refresh_token": self.refresh_token, "client_id": self.client_id}
        _client(form, self.client_secret, self.scope)
        token = await post_token_form(http, self.token_url, form)
        if token.refresh_token:
            self.refresh_token = token.refresh_token
        return token

    def rotate(self, refresh_token: str) -> None:
        """Another gateway's rotation, read from the shared state: use it from now on."""
        self.refresh_token = refresh_token


@dataclass(frozen=True, slots=True)
class ClientCredentialsSource:
    """``grant_type=client_credentials`` (RFC 6749 section 4.4): Microsoft Entra ID's app tokens, e.g.
    scope ``https://cognitiveservices.azure.com/.default`` for Azure OpenAI."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str = ""

    async def fetch(self, http: aiohttp.ClientSession) -> Token:
        form = {"grant_type": "client_credentials", "client_id": self.client_id}
        _client(form, self.client_secret, self.scope)
        return await post_token_form(http, self.token_url, form)


def _client(form: dict[str, str], secret: str, scope: str) -> None:
    if secret:
        form["client_secret"] = secret
    if scope:
        form["scope"] = scope


def refresh_token_source(spec: Mapping[str, Any]) -> RefreshTokenSource:
    """The ``oauth2_refresh_token`` kind, from its validated ``credential:`` mapping."""
    return RefreshTokenSource(spec["token_url"], spec["client_id"], spec.get("client_secret", ""),
                              spec["refresh_token"], spec.get("scope", ""))


def client_credentials_source(spec: Mapping[str, Any]) -> ClientCredentialsSource:
    """The ``oauth2_client_credentials`` kind, from its validated ``credential:`` mapping."""
    return ClientCredentialsSource(spec["token_url"], spec["client_id"], spec["client_secret"],
                                   spec.get("scope", ""))
