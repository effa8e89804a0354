"""The ``aws_sigv4`` credential: an account that signs each finished upstream request with AWS SigV4.

An account's ``credential:`` mapping::

    credential: {type: aws_sigv4, access_key_id: "${AWS_ACCESS_KEY_ID}",
                 secret_access_key: "${AWS_SECRET_ACCESS_KEY}", session_token: "${AWS_SESSION_TOKEN:-}",
                 region: us-east-1}          # service: bedrock (the default)

:func:`from_config` builds the :class:`AwsSigV4` signer (a :class:`router.credentials.Signer`); its
``sign`` runs once per attempt, after the template rendered the request, and signs it exactly as it
will go on the wire (the URL's path and query as aiohttp sends them, the Host header it sends). The
secret key and the session token never appear in a repr or an error message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yarl import URL

from router.sigv4 import sign_headers

if TYPE_CHECKING:
    from router.upstream_request import UpstreamRequest

KIND = "aws_sigv4"
DEFAULT_SERVICE = "bedrock"
_NAME = re.compile(r"\A[a-z0-9-]{1,64}\Z")  # a region or service name: us-east-1, bedrock
_SIGNED = ("content-type",)  # besides Host and the X-Amz-* headers: what a proxy must not change
_REPLACED = frozenset({"authorization", "host", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})


@dataclass(frozen=True, slots=True)
class AwsSigV4:
    """One account's AWS key pair (and session token), for one region and service."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str
    session_token: str | None = field(default=None, repr=False)
    service: str = DEFAULT_SERVICE

    def sign(self, request: UpstreamRequest, now: float) -> None:
        """Adds ``Host``, ``X-Amz-Date``, ``X-Amz-Security-Token`` (a session's) and ``Authorization``.
        The query parameters are folded into the URL first, so what is signed is what is sent."""
        url = URL(request.url)
        if request.params:
            url = url.extend_query(request.params)
            request.url, request.params = str(url), None
            url = URL(request.url)
        host = url.host_port_subcomponent or ""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _REPLACED}
        signed = {k: v for k, v in headers.items() if k.lower() in _SIGNED}
        headers["Host"] = host
        headers.update(sign_headers(request.method, host, url.raw_path, url.raw_query_string, signed, request.body,
                                    access_key_id=self.access_key_id, secret_access_key=self.secret_access_key,
                                    region=self.region, service=self.service, now=now,
                                    session_token=self.session_token))
        request.headers = headers


def from_config(mapping: Mapping[str, Any]) -> AwsSigV4:
    """The signer of an account's ``credential: {type: aws_sigv4, ...}``; ValueError naming the field
    (never its value) when one is missing or malformed."""
    if mapping.get("type", KIND) != KIND:
        raise ValueError(f"credential type must be {KIND!r}")
    key_id, secret = _text(mapping, "access_key_id"), _text(mapping, "secret_access_key")
    region, service = _text(mapping, "region"), mapping.get("service", DEFAULT_SERVICE)
    if not _NAME.match(region):
        raise ValueError("credential field 'region' must be an AWS region name such as us-east-1")
    if not isinstance(service, str) or not _NAME.match(service):
        raise ValueError("credential field 'service' must be an AWS service name such as bedrock")
    token = mapping.get("session_token")
    if token is not None and not isinstance(token, str):
        raise ValueError("credential field 'session_token' must be a string")
    return AwsSigV4(key_id, secret, region, token or None, service)


def _text(mapping: Mapping[str, Any], name: str) -> str:
    value = mapping.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"credential field {name!r} is missing or empty")
    if not value.isascii() or any(c in value for c in "\r\n\0"):
        raise ValueError(f"credential field {name!r} holds characters a key cannot")
    return value.strip()
