"""AWS Signature Version 4 (header signing), as pure functions: no I/O, no clock, no state.

The steps AWS documents, each its own function so tests can hold every one against AWS's published
test suite: :func:`canonical_request` → :func:`string_to_sign` (with :func:`credential_scope`) →
:func:`signing_key` → :func:`signature` → :func:`authorization`. :func:`sign_headers` runs them for one
request and returns the headers to add. The gateway's signer (``router.credential_aws``) and the
simulator's verifier (``router.sim.bedrock``) both call these, so what is signed is what is checked.

Paths: the canonical URI is the path *as sent* (already percent-encoded) URI-encoded once more, as
every AWS service but S3 wants it (a model id ``a%3A0`` is signed as ``a%253A0``); ``normalize``
removes dot segments and empty segments first.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = "-_.~"  # with letters and digits: the bytes RFC 3986 leaves unencoded, and so does SigV4


def amz_date(now: float) -> str:
    """``YYYYMMDDTHHMMSSZ`` for unix seconds ``now`` (UTC)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def uri_encode(text: str, keep_slash: bool = False) -> str:
    """SigV4's URI encoding: every byte but the unreserved ones as ``%XX`` (upper-case hex)."""
    return quote(text, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_uri(path: str, normalize: bool = True) -> str:
    """The canonical URI of ``path``: normalized (RFC 3986 dot segments, no empty segments), then
    URI-encoded with its slashes kept."""
    if not path:
        path = "/"
    if normalize:
        path = _normalized(path)
    return uri_encode(path, keep_slash=True)


def _normalized(path: str) -> str:
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg and seg != ".":
            out.append(seg)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and out else ""
    return "/" + "/".join(out) + trailing


def canonical_query(query: str) -> str:
    """The canonical query string of a raw query: each name and value decoded, then URI-encoded,
    the pairs sorted by name, then value."""
    pairs: list[tuple[str, str]] = []
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((uri_encode(unquote(name)), uri_encode(unquote(value))))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(canonical headers block, signed headers list) of ``(name, value)`` pairs: names lower-cased
    and sorted, values trimmed with inner runs of whitespace made one space, a repeated name's values
    joined by commas in their order."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.strip().lower(), []).append(" ".join(value.split()))
    names = sorted(merged)
    block = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
    return block, ";".join(names)


def canonical_request(method: str, path: str, query: str, headers: Iterable[tuple[str, str]], payload_hash: str,
                      normalize: bool = True) -> tuple[str, str]:
    """(canonical request, signed headers) for a request whose every header in ``headers`` is signed."""
    block, signed = canonical_headers(headers)
    text = "\n".join((method.upper(), canonical_uri(path, normalize), canonical_query(query), block, signed,
                      payload_hash))
    return text, signed


def credential_scope(date: str, region: str, service: str) -> str:
    """``YYYYMMDD/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest()))


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """The day's key: HMAC-SHA256 chained over date, region, service and ``aws4_request``."""
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(key: bytes, to_sign: str) -> str:
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(access_key_id: str, scope: str, signed_headers: str, sig: str) -> str:
    return f"{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, Signature={sig}"


def sign_headers(method: str, host: str, path: str, query: str, headers: Mapping[str, str], body: bytes, *,
                 access_key_id: str, secret_access_key: str, region: str, service: str, now: float,
                 session_token: str | None = None, content_sha256: bool = False) -> dict[str, str]:
    """The headers that sign one request: ``X-Amz-Date``, ``X-Amz-Security-Token`` (a session's),
    ``X-Amz-Content-Sha256`` (when asked) and ``Authorization``. ``headers`` are the request's other
    headers to sign (``Host`` is always signed); ``path`` and ``query`` are as sent (encoded)."""
    timestamp = amz_date(now)
    payload_hash = hashlib.sha256(body).hexdigest()
    added = {"X-Amz-Date": timestamp}
    if session_token:
        added["X-Amz-Security-Token"] = session_token
    if content_sha256:
        added["X-Amz-Content-Sha256"] = payload_hash
    signed = [("host", host), *headers.items(), *added.items()]
    canonical, names = canonical_request(method, path, query, signed, payload_hash)
    scope = credential_scope(timestamp[:8], region, service)
    key = signing_key(secret_access_key, timestamp[:8], region, service)
    added["Authorization"] = authorization(access_key_id, scope, names,
                                           signature(key, string_to_sign(timestamp, scope, canonical)))
    return added
