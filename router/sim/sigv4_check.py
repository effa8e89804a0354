"""The simulator's side of AWS SigV4: check a request's signature the way AWS does, with known test keys.

The fake knows :data:`TEST_KEYS` (access key id → secret and, for a temporary credential, its session
token). A request passes when its ``Authorization`` names a known key, its ``X-Amz-Date`` is within
:data:`MAX_SKEW` of now, the credential scope's date matches it, ``Host`` and every ``X-Amz-*`` header
are signed, and the signature recomputed from the request as received matches. Otherwise a
:class:`Refusal` names the exception AWS answers with (always a 403).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from aiohttp import web

from router import sigv4

TEST_ACCESS_KEY_ID = "AKIASIMULATOR0000001"
TEST_SECRET_ACCESS_KEY = "sim/secret/access/key/0000000000000000000"
TEST_SESSION_KEY_ID = "ASIASIMULATOR0000002"
TEST_SESSION_SECRET = "sim/session/secret/key/00000000000000000"
TEST_SESSION_TOKEN = "sim-session-token-0000000000000000000000"
# access key id -> (secret access key, session token it must come with, or None)
TEST_KEYS: dict[str, tuple[str, str | None]] = {
    TEST_ACCESS_KEY_ID: (TEST_SECRET_ACCESS_KEY, None),
    TEST_SESSION_KEY_ID: (TEST_SESSION_SECRET, TEST_SESSION_TOKEN),
}
MAX_SKEW = 15 * 60  # seconds a signature's time may be off the server's, as AWS allows
_AUTH = re.compile(r"\AAWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<scope>[^,\s]+),\s*"
                   r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})\Z")


@dataclass(frozen=True, slots=True)
class Refusal:
    exception: str  # AWS's exception type, e.g. InvalidSignatureException
    message: str


def access_key_of(request: web.Request) -> str | None:
    """The access key id the request's ``Authorization`` names (the fake's "API key" for faults)."""
    match = _AUTH.match(request.headers.get("Authorization", ""))
    return match.group("key") if match else None


def check(request: web.Request, body: bytes, now: float | None = None) -> Refusal | None:
    """None when the request is signed by a known key; else why not."""
    match = _AUTH.match(request.headers.get("Authorization", ""))
    if match is None:
        return Refusal("MissingAuthenticationTokenException", "Missing Authentication Token")
    known = TEST_KEYS.get(match.group("key"))
    if known is None:
        return Refusal("UnrecognizedClientException", "The security token included in the request is invalid.")
    secret, token = known
    if token is not None and request.headers.get("X-Amz-Security-Token") != token:
        return Refusal("UnrecognizedClientException", "The security token included in the request is invalid.")
    refusal = _scope_refusal(request, match.group("scope"), match.group("signed"), now)
    if refusal is not None:
        return refusal
    date, region, service, _ = match.group("scope").split("/")
    signed = match.group("signed").split(";")
    headers = [(name, ",".join(request.headers.getall(name, []))) for name in signed]
    canonical, _names = sigv4.canonical_request(request.method, request.rel_url.raw_path,
                                                request.rel_url.raw_query_string, headers,
                                                hashlib.sha256(body).hexdigest())
    key = sigv4.signing_key(secret, date, region, service)
    expected = sigv4.signature(key, sigv4.string_to_sign(request.headers["X-Amz-Date"], match.group("scope"),
                                                         canonical))
    if not hmac.compare_digest(expected, match.group("sig")):
        return Refusal("InvalidSignatureException",
                       "The request signature we calculated does not match the signature you provided.")
    return None


def _scope_refusal(request: web.Request, scope: str, signed: str, now: float | None) -> Refusal | None:
    stamp = request.headers.get("X-Amz-Date", "")
    try:
        when = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return Refusal("IncompleteSignatureException", "X-Amz-Date is missing or malformed.")
    parts = scope.split("/")
    if len(parts) != 4 or parts[0] != stamp[:8] or parts[3] != "aws4_request" or parts[2] != "bedrock":
        return Refusal("InvalidSignatureException", "Credential should be scoped to a valid date, region and service.")
    if abs((time.time() if now is None else now) - when) > MAX_SKEW:
        return Refusal("InvalidSignatureException", "Signature expired: the request time is too skewed.")
    names = signed.split(";")
    must = {"host", *(h.lower() for h in request.headers if h.lower().startswith("x-amz-"))}
    if not must <= set(names):
        return Refusal("InvalidSignatureException", "Host and every X-Amz-* header must be signed.")
    return None
