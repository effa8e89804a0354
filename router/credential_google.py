"""A Google service account as an account credential: a signed JWT exchanged for an access token.

The account's ``credential:`` mapping holds the service account's JSON key (``key: "${file:sa.json}"``,
the file Google's console downloads) or its fields one by one (``client_email``, ``private_key``,
``private_key_id``, ``token_uri``), and optional ``scope`` and ``subject`` (domain-wide delegation).
Each fetch signs a fresh assertion (RFC 7523 section 2.1, RS256 with the ``cryptography`` package) and
exchanges it at the key's ``token_uri`` through :func:`router.credentials.post_token_form`; the gateway
caches the token and templates read it as ``account.access_token`` (Vertex AI, any Google Cloud API).

A bad key is a config error naming the field that is wrong; no message ever quotes the key material.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from router.credentials import Token, post_token_form

# ``cryptography`` (the ``gcp`` extra) is imported where a service account is compiled or signs: a
# config without one needs neither the package nor its import time

KIND = "google_service_account"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
ASSERTION_LIFETIME = 3600  # seconds: the longest Google accepts
FIELDS = frozenset({"type", "key", "client_email", "private_key", "private_key_id", "token_uri", "scope", "subject"})
_KEY_FIELDS = ("client_email", "private_key", "private_key_id", "token_uri")


@dataclass(frozen=True, slots=True)
class GoogleServiceAccount:
    """One service account: who it is, its signing key and what it asks for. The key never shows in
    a repr (nor does anything derived from it)."""

    client_email: str
    private_key: Any = field(repr=False)  # cryptography's RSAPrivateKey
    private_key_id: str | None
    token_uri: str
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    subject: str | None = None  # the user to act for (domain-wide delegation)

    def assertion(self, now: float) -> str:
        """The RFC 7523 JWT: ``iss`` the account, ``aud`` the token endpoint, valid for an hour."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
        if self.private_key_id:
            header["kid"] = self.private_key_id
        iat = int(now)
        claims: dict[str, object] = {"iss": self.client_email, "scope": " ".join(self.scopes),
                                     "aud": self.token_uri, "iat": iat, "exp": iat + ASSERTION_LIFETIME}
        if self.subject:
            claims["sub"] = self.subject
        signing_input = f"{_b64url(orjson.dumps(header))}.{_b64url(orjson.dumps(claims))}".encode()
        signature = self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64url(signature)}"

    async def fetch(self, http: aiohttp.ClientSession) -> Token:
        form = {"grant_type": GRANT_TYPE, "assertion": self.assertion(time.time())}
        return await post_token_form(http, self.token_uri, form)


def from_config(mapping: Mapping[str, Any]) -> GoogleServiceAccount:
    """The token source of a ``credential: {type: google_service_account, ...}`` mapping; raises
    ``ValueError`` naming the field that is missing or wrong (never quoting the key)."""
    unknown = sorted(set(mapping) - FIELDS)
    if unknown:
        raise ValueError(f"credential: unknown field {unknown[0]!r} for {KIND}")
    key = _key_fields(mapping)
    email = _text(key, "client_email", required=True)
    token_uri = _text(key, "token_uri") or DEFAULT_TOKEN_URI
    if not token_uri.startswith(("https://", "http://")):
        raise ValueError("credential.token_uri: must be an http(s) URL")
    return GoogleServiceAccount(client_email=email, private_key=_private_key(key.get("private_key")),
                                private_key_id=_text(key, "private_key_id") or None, token_uri=token_uri,
                                scopes=_scopes(mapping.get("scope")), subject=_text(mapping, "subject") or None)


def _key_fields(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """The key's fields: from ``key`` (the JSON key file's text, or a mapping) or given one by one;
    a field given beside ``key`` overrides the key's."""
    raw = mapping.get("key")
    if raw is None:
        return mapping
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError("credential.key: not JSON (expected a service account's JSON key file)") from None
    if not isinstance(raw, dict):
        raise ValueError("credential.key: must be a service account's JSON key (an object)")
    kind = raw.get("type", "service_account")
    if kind != "service_account":
        shown = repr(kind) if isinstance(kind, str) and len(kind) <= 40 else "another kind"
        raise ValueError(f"credential.key: type is {shown}, not service_account")
    return {**{k: raw[k] for k in _KEY_FIELDS if k in raw}, **{k: mapping[k] for k in _KEY_FIELDS if k in mapping}}


def _text(mapping: Mapping[str, Any], name: str, required: bool = False) -> str:
    value = mapping.get(name)
    if value is None or value == "":
        if required:
            raise ValueError(f"credential.{name}: missing")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"credential.{name}: must be a string")
    return value


def _private_key(value: Any) -> Any:
    """The RSA private key of a PEM text (``\\n`` escapes, as an environment variable carries them,
    read as newlines)."""
    if value is None or value == "":
        raise ValueError("credential.private_key: missing")
    if not isinstance(value, str):
        raise ValueError("credential.private_key: must be a PEM string")
    try:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise ValueError("google_service_account needs the 'cryptography' package "
                         "(pip install 'declarative-llm-router[gcp]')") from None
    pem = value.replace("\\n", "\n") if "\n" not in value else value
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography's messages are about the structure, but say nothing of ours either way
        raise ValueError("credential.private_key: not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("credential.private_key: not an RSA key (RS256 needs one)")
    return key


def _scopes(value: Any) -> tuple[str, ...]:
    """``scope``: space-separated, as the other kinds and the JWT claim write it (a list is read too);
    absent or empty: cloud-platform."""
    scopes = value.split() if isinstance(value, str) else value
    if not scopes:
        return DEFAULT_SCOPES
    if not isinstance(scopes, list | tuple) or not all(isinstance(s, str) and s and s.isascii() for s in scopes):
        raise ValueError("credential.scope: must be space-separated scope URLs (or a list of them)")
    return tuple(scopes)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
