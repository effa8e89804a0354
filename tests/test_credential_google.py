"""router.credential_google: the service account's signed assertion and its exchange, against a local server."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from router.credential_google import DEFAULT_SCOPES, GRANT_TYPE, GoogleServiceAccount, from_config
from router.credentials import CredentialRevoked


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _key_json(key: rsa.RSAPrivateKey, token_uri: str = "https://oauth2.googleapis.com/token") -> str:
    return orjson.dumps({
        "type": "service_account", "project_id": "proj-1", "private_key_id": "kid-123",
        "private_key": _pem(key), "client_email": "sa@proj-1.iam.gserviceaccount.com",
        "client_id": "1234", "token_uri": token_uri}).decode()


def service_account_key(token_uri: str) -> str:
    """A service account's JSON key file, with a fresh RSA key, for tests that need one on disk
    (``key: "${file:secrets/sa.json}"``) and a token endpoint of their own."""
    return _key_json(rsa.generate_private_key(public_exponent=65537, key_size=2048), token_uri)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _verified(jwt: str, key: rsa.RSAPrivateKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of ``jwt`` once its RS256 signature checks out with the public key."""
    head, claims, signature = jwt.split(".")
    key.public_key().verify(_b64(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return orjson.loads(_b64(head)), orjson.loads(_b64(claims))


def test_the_assertion_is_an_rs256_jwt_with_the_rfc_7523_claims(rsa_key: rsa.RSAPrivateKey) -> None:
    account = from_config({"type": "google_service_account", "key": _key_json(rsa_key)})
    header, claims = _verified(account.assertion(1_700_000_000.7), rsa_key)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "kid-123"}
    assert claims == {"iss": "sa@proj-1.iam.gserviceaccount.com", "scope": DEFAULT_SCOPES[0],
                      "aud": "https://oauth2.googleapis.com/token", "iat": 1_700_000_000, "exp": 1_700_003_600}


def test_a_tampered_assertion_fails_verification(rsa_key: rsa.RSAPrivateKey) -> None:
    jwt = from_config({"key": _key_json(rsa_key)}).assertion(time.time())
    head, claims, signature = jwt.split(".")
    forged = base64.urlsafe_b64encode(orjson.dumps({**orjson.loads(_b64(claims)), "iss": "evil"})).rstrip(b"=")
    with pytest.raises(InvalidSignature):
        _verified(f"{head}.{forged.decode()}.{signature}", rsa_key)


def test_fields_one_by_one_scopes_and_subject(rsa_key: rsa.RSAPrivateKey) -> None:
    escaped = _pem(rsa_key).replace("\n", "\\n")  # as an environment variable carries a PEM
    account = from_config({"type": "google_service_account", "client_email": "sa@x.iam.gserviceaccount.com",
                           "private_key": escaped, "scope": "scope-a scope-b", "subject": "alice@example.com"})
    header, claims = _verified(account.assertion(1000), rsa_key)
    assert "kid" not in header
    assert claims["scope"] == "scope-a scope-b" and claims["sub"] == "alice@example.com"
    assert claims["aud"] == "https://oauth2.googleapis.com/token"
    assert from_config({"client_email": "a@b", "private_key": _pem(rsa_key), "scope": ["s1", "s2"]}).scopes == (
        "s1", "s2")
    assert from_config({"client_email": "a@b", "private_key": _pem(rsa_key), "scope": ""}).scopes == DEFAULT_SCOPES


def test_a_field_beside_the_key_overrides_it(rsa_key: rsa.RSAPrivateKey) -> None:
    account = from_config({"key": _key_json(rsa_key), "token_uri": "http://127.0.0.1:1/token"})
    assert account.token_uri == "http://127.0.0.1:1/token"
    assert account.client_email == "sa@proj-1.iam.gserviceaccount.com"


def _bad_configs(key: rsa.RSAPrivateKey) -> list[tuple[dict[str, Any], str]]:
    pem = _pem(key)
    good = orjson.loads(_key_json(key))
    ec_pem = _pem(ec.generate_private_key(ec.SECP256R1()))
    return [
        ({"key": pem}, "credential.key: not JSON"),
        ({"key": "[1, 2]"}, "credential.key: must be"),
        ({"key": orjson.dumps({**good, "type": "authorized_user"}).decode()}, "type is 'authorized_user'"),
        ({"key": orjson.dumps({k: v for k, v in good.items() if k != "client_email"}).decode()},
         "credential.client_email: missing"),
        ({"key": orjson.dumps({k: v for k, v in good.items() if k != "private_key"}).decode()},
         "credential.private_key: missing"),
        ({"key": orjson.dumps({**good, "private_key": pem[:200] + "AAAA" + pem[300:]}).decode()},
         "credential.private_key: not an unencrypted PEM"),
        ({"client_email": "a@b", "private_key": ec_pem}, "credential.private_key: not an RSA key"),
        ({"client_email": "a@b", "private_key": 42}, "credential.private_key: must be a PEM string"),
        ({"client_email": "a@b", "private_key": pem, "token_uri": "file:///etc/passwd"},
         "credential.token_uri: must be an http(s) URL"),
        ({"client_email": "a@b", "private_key": pem, "scope": [""]}, "credential.scope:"),
        ({"client_email": "a@b", "private_key": pem, "scope": 7}, "credential.scope:"),
        ({"client_email": "a@b", "private_key": pem, "scopes": "x"}, "unknown field 'scopes'"),
        ({"client_email": "a@b", "private_key": pem, "token": "x"}, "unknown field 'token'"),
    ]


def test_a_bad_key_is_a_config_error_naming_the_field_never_the_key(rsa_key: rsa.RSAPrivateKey) -> None:
    pem_body = "".join(_pem(rsa_key).splitlines()[1:-1])
    for config, message in _bad_configs(rsa_key):
        with pytest.raises(ValueError, match="credential") as err:
            from_config(config)
        assert message in str(err.value), (message, str(err.value))
        text = str(err.value)
        assert "PRIVATE KEY" not in text and not any(pem_body[i:i + 16] in text for i in range(0, 1600, 16))
        assert err.value.__cause__ is None  # no chained parser error that could quote the input
        assert err.value.__suppress_context__ or err.value.__context__ is None


def test_the_account_never_shows_its_key(rsa_key: rsa.RSAPrivateKey) -> None:
    account = from_config({"key": _key_json(rsa_key)})
    text = repr(account) + str(account)
    assert "PRIVATE" not in text and "RSAPrivateKey" not in text
    assert "sa@proj-1.iam.gserviceaccount.com" in text  # who it is, yes


async def _token_server(aiohttp_server: Any, answer: dict[str, Any], status: int = 200
                        ) -> tuple[Any, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        seen.append(dict(await request.post()))
        return web.json_response(answer, status=status)

    app = web.Application()
    app.router.add_post("/token", token)
    return await aiohttp_server(app), seen


async def test_fetch_exchanges_the_assertion_at_the_token_uri(aiohttp_server: Any, rsa_key: rsa.RSAPrivateKey) -> None:
    server, seen = await _token_server(aiohttp_server, {"access_token": "ya29.sim", "expires_in": 3599,
                                                        "token_type": "Bearer"})
    url = str(server.make_url("/token"))
    account = from_config({"type": "google_service_account", "key": _key_json(rsa_key, url)})
    before = time.time()
    async with aiohttp.ClientSession() as http:
        token = await account.fetch(http)
    assert token.access_token == "ya29.sim" and before + 3599 <= token.expires_at <= time.time() + 3599
    [form] = seen
    assert set(form) == {"grant_type", "assertion"} and form["grant_type"] == GRANT_TYPE
    _, claims = _verified(form["assertion"], rsa_key)
    assert claims["aud"] == url and int(before) <= claims["iat"] <= time.time()


async def test_a_revoked_account_is_refused_for_good(aiohttp_server: Any, rsa_key: rsa.RSAPrivateKey) -> None:
    server, _ = await _token_server(aiohttp_server, {"error": "invalid_grant",
                                                     "error_description": "Invalid JWT Signature."}, 400)
    account: GoogleServiceAccount = from_config({"key": _key_json(rsa_key, str(server.make_url("/token")))})
    async with aiohttp.ClientSession() as http:
        with pytest.raises(CredentialRevoked, match="invalid_grant") as err:
            await account.fetch(http)
    assert "Signature" not in str(err.value)


def test_importing_the_kind_does_not_import_cryptography() -> None:
    """The ``gcp`` extra is needed only by a config with a service account (the kinds table imports this)."""
    code = "import sys, router.credential_google; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
