"""What an account authenticates with, beyond a static key: the shapes every credential kind shares.

A static ``api_key`` needs nothing here (templates read ``account.api_key``). The other kinds are one
of two shapes, each built from an account's ``credential:`` mapping:

- a :class:`TokenSource` fetches a short-lived access token from a token server (OAuth2 refresh
  token, client credentials, a Google service account's signed JWT). The gateway caches the token,
  refreshes it before it expires (one refresh per account at a time) and templates read it as
  ``account.access_token``;
- a :class:`Signer` signs the finished upstream request (AWS SigV4) just before it is sent.

:func:`post_token_form` is the one token-endpoint exchange (RFC 6749 section 4 and 5) the token kinds
share: a form POST with aiohttp (the event loop never blocks), a bounded answer, and the server's
refusal sorted into permanent (:class:`CredentialRevoked`: the account is disabled, not retried
forever) or transient (:class:`CredentialUnavailable`: the attempt fails, a later one tries again).
No message here ever quotes a token, a secret or the server's answer beyond its error code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import aiohttp
import orjson

from router.bodies import read_limited

if TYPE_CHECKING:  # a type only: the upstream request imports the snapshot, which imports the accounts
    from router.upstream_request import UpstreamRequest

TOKEN_ANSWER_LIMIT = 64 * 1024  # bytes of a token endpoint's answer: a token is at most a few KiB
TOKEN_TIMEOUT = 10.0  # seconds for one token request, connect to last byte
MAX_LIFETIME = 24 * 3600.0  # an ``expires_in`` beyond a day is read as a day (a hostile server's 10^12)
DEFAULT_LIFETIME = 3600.0  # RFC 6749 makes ``expires_in`` optional: an hour, as Google and Entra issue
MAX_TOKEN_CHARS = 16 * 1024  # a longer access token is refused as a malformed answer
# OAuth2 error codes (RFC 6749 section 5.2) that no retry can fix: the grant or the client is gone
PERMANENT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type",
                              "invalid_scope"})


class CredentialRevoked(Exception):
    """The token server refused for good (``invalid_grant`` and kin): the account is disabled until a
    reload gives it a new credential. The message names the error code, never a secret."""


class CredentialUnavailable(Exception):
    """The token server could not be reached, timed out or answered badly: this attempt fails, a
    later one tries again."""


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str = field(repr=False)
    expires_at: float  # ``time.time()`` seconds
    refresh_token: str | None = field(default=None, repr=False)  # a rotated one (RFC 6749 section 6)

    def fresh(self, now: float, margin: float) -> bool:
        """Usable for at least ``margin`` more seconds."""
        return self.expires_at - margin > now


@runtime_checkable
class TokenSource(Protocol):
    """One account's way to a short-lived access token."""

    async def fetch(self, http: aiohttp.ClientSession) -> Token: ...


@runtime_checkable
class Signer(Protocol):
    """One account's way to sign a finished upstream request (adds or replaces headers)."""

    def sign(self, request: UpstreamRequest, now: float) -> None: ...


async def post_token_form(http: aiohttp.ClientSession, url: str, form: Mapping[str, str],
                          headers: Mapping[str, str] | None = None, timeout: float = TOKEN_TIMEOUT) -> Token:
    """POST ``form`` to a token endpoint and read its answer as an RFC 6749 access token response."""
    try:
        async with http.post(url, data=dict(form), headers={"Accept": "application/json", **(headers or {})},
                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await read_limited(resp.content, TOKEN_ANSWER_LIMIT)
            status = resp.status
    except TimeoutError:
        raise CredentialUnavailable(f"token endpoint timed out after {timeout:g} s") from None
    except aiohttp.ClientError as e:
        raise CredentialUnavailable(f"token endpoint unreachable: {type(e).__name__}") from None
    if body is None:
        raise CredentialUnavailable(f"token endpoint answer is over {TOKEN_ANSWER_LIMIT} bytes")
    return _token_answer(status, body, time.time())


def _token_answer(status: int, body: bytes, now: float) -> Token:
    answer = _json_object(body)
    if status >= 400 or "access_token" not in answer:
        code = answer.get("error")
        code = code if isinstance(code, str) and code.isascii() and len(code) <= 64 else None
        if code in PERMANENT_ERRORS:
            raise CredentialRevoked(f"token endpoint refused the grant: {code}")
        what = f"error {code}" if code else "no access_token"
        raise CredentialUnavailable(f"token endpoint answered {status} with {what}")
    token = answer["access_token"]
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise CredentialUnavailable("token endpoint answered with a malformed access_token")
    refresh = answer.get("refresh_token")
    return Token(token, now + _lifetime(answer.get("expires_in")),
                 refresh if isinstance(refresh, str) and 0 < len(refresh) <= MAX_TOKEN_CHARS else None)


def _json_object(body: bytes) -> dict[str, object]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _lifetime(expires_in: object) -> float:
    """Seconds the token lives: ``expires_in`` as a number or a numeric string (some servers send
    one), bounded to (0, a day]; absent or unreadable: an hour."""
    if isinstance(expires_in, str):
        try:
            expires_in = float(expires_in)
        except ValueError:
            return DEFAULT_LIFETIME
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in != expires_in:
        return DEFAULT_LIFETIME
    return min(max(float(expires_in), 0.0), MAX_LIFETIME)
