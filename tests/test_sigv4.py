"""SigV4 against AWS's published test suite (tests/data/sigv4, see its README) and botocore."""

from __future__ import annotations

import calendar
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from router import sigv4

DATA = Path(__file__).parent / "data" / "sigv4"
CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())


def _parse_request(text: str) -> tuple[str, str, str, list[tuple[str, str]], bytes]:
    """(method, path, query, headers, body) of a test suite ``request.txt`` (folded lines kept)."""
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, rest = lines[0].split(" ", 1)
    target = rest.rsplit(" ", 1)[0]  # the path may hold spaces; the HTTP version is last
    path, _, query = target.partition("?")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # an obsolete folded continuation line
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
        elif line:
            name, _, value = line.partition(":")
            headers.append((name, value))
    return method, path, query, headers, body.encode()


def _case(name: str) -> dict[str, Any]:
    d = DATA / name
    ctx = json.loads((d / "context.json").read_text())
    method, path, query, headers, body = _parse_request((d / "request.txt").read_text())
    ts = time.strptime(ctx["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    return {"ctx": ctx, "method": method, "path": path, "query": query, "headers": headers, "body": body,
            "now": float(calendar.timegm(ts)),
            "canonical": (d / "header-canonical-request.txt").read_text(),
            "sts": (d / "header-string-to-sign.txt").read_text(),
            "signature": (d / "header-signature.txt").read_text().strip(),
            "signed": (d / "header-signed-request.txt").read_text()}


def _authorization_line(signed_request: str) -> str:
    return next(line.split(":", 1)[1] for line in signed_request.splitlines() if line.startswith("Authorization:"))


def test_the_suite_is_there() -> None:
    assert len(CASES) >= 35 and (DATA / "LICENSE").is_file()


@pytest.mark.parametrize("name", CASES)
def test_vector(name: str) -> None:
    c = _case(name)
    ctx, creds = c["ctx"], c["ctx"]["credentials"]
    timestamp = sigv4.amz_date(c["now"])
    payload_hash = hashlib.sha256(c["body"]).hexdigest()
    headers = [*c["headers"], ("X-Amz-Date", timestamp)]
    if creds.get("token") and not ctx.get("omit_session_token"):
        headers.append(("X-Amz-Security-Token", creds["token"]))
    if ctx["sign_body"]:
        headers.append(("X-Amz-Content-Sha256", payload_hash))
    canonical, signed = sigv4.canonical_request(c["method"], c["path"], c["query"], headers, payload_hash,
                                                normalize=ctx["normalize"])
    assert canonical == c["canonical"]
    scope = sigv4.credential_scope(timestamp[:8], ctx["region"], ctx["service"])
    sts = sigv4.string_to_sign(timestamp, scope, canonical)
    assert sts == c["sts"]
    sig = sigv4.signature(sigv4.signing_key(creds["secret_access_key"], timestamp[:8], ctx["region"],
                                            ctx["service"]), sts)
    assert sig == c["signature"]
    assert sigv4.authorization(creds["access_key_id"], scope, signed, sig) == _authorization_line(c["signed"])


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith(("get-vanilla", "post-vanilla"))])
def test_sign_headers_matches_the_suite(name: str) -> None:
    """The one-call signer gives the suite's Authorization for the cases it can express (Host and the
    amz headers signed, a normalized path)."""
    c = _case(name)
    ctx, creds = c["ctx"], c["ctx"]["credentials"]
    host = next(v for k, v in c["headers"] if k.lower() == "host")
    others = {k: v for k, v in c["headers"] if k.lower() != "host"}
    added = sigv4.sign_headers(c["method"], host, c["path"], c["query"], others, c["body"],
                               access_key_id=creds["access_key_id"], secret_access_key=creds["secret_access_key"],
                               region=ctx["region"], service=ctx["service"], now=c["now"],
                               session_token=creds.get("token"))
    assert added["Authorization"] == _authorization_line(c["signed"])
    assert added["X-Amz-Date"] == "20150830T123600Z"


def test_botocore_agrees_on_a_bedrock_request() -> None:
    """botocore's SigV4Auth and ours sign a Converse call identically (its model id has a colon, sent
    percent-encoded, and a session token)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    host = "bedrock-runtime.us-west-2.amazonaws.com"
    path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-1")
    req = AWSRequest("POST", f"https://{host}{path}", data=body, headers={"Content-Type": "application/json"})
    auth = SigV4Auth(creds, "bedrock", "us-west-2")
    auth.add_auth(req)  # at botocore's clock: ours signs at the same second
    now = float(calendar.timegm(time.strptime(req.context["timestamp"], "%Y%m%dT%H%M%SZ")))
    ours = sigv4.sign_headers("POST", host, path, "", {"Content-Type": "application/json"}, body,
                              access_key_id="AKIDEXAMPLE", secret_access_key=creds.secret_key, region="us-west-2",
                              service="bedrock", now=now, session_token="session-token-1")
    assert ours["Authorization"] == req.headers["Authorization"]
    assert ours["X-Amz-Security-Token"] == req.headers["X-Amz-Security-Token"]
    assert ours["X-Amz-Date"] == req.headers["X-Amz-Date"]


def test_path_is_encoded_again_and_normalized() -> None:
    assert sigv4.canonical_uri("/model/a%3A0/converse") == "/model/a%253A0/converse"
    assert sigv4.canonical_uri("/a/./b/../c//d/") == "/a/c/d/"
    assert sigv4.canonical_uri("") == "/"
