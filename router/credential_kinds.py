"""The credential kinds an account's ``credential: {type: ...}`` may name, and their compile step.

``KINDS`` maps each type name to its factory: a function from the validated ``credential:`` mapping
(``${VAR}`` and ``${file:...}`` already resolved) to a :class:`~router.credentials.TokenSource` (the
gateway caches its tokens; templates read ``account.access_token``) or a
:class:`~router.credentials.Signer` (it signs each finished request). A new kind is one line here
(a factory whose heavy imports happen inside it, so an optional extra is only needed when used),
one entry in ``schemas/credentials.schema.json`` and a README section. ``api_key`` is the static key
of old in the same shape; it needs no factory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from router import credential_aws, credential_google
from router.config import LoadedConfig, Pointer
from router.credential_oauth2 import client_credentials_source, refresh_token_source
from router.credentials import Signer, TokenSource
from router.errors import ConfigError

# a kind's factory: the validated ``credential:`` mapping -> how the account authenticates; raises
# ValueError (a message naming fields, never a value) for what the schema cannot see (a malformed key file)
CredentialFactory = Callable[[Mapping[str, Any]], "TokenSource | Signer"]

KINDS: Mapping[str, CredentialFactory] = MappingProxyType({
    "oauth2_refresh_token": refresh_token_source,
    "oauth2_client_credentials": client_credentials_source,
    "google_service_account": credential_google.from_config,
    credential_aws.KIND: credential_aws.from_config,
})
API_KEY = "api_key"  # the static key as a credential: ``{type: api_key, key: ...}``


@dataclass(frozen=True, slots=True)
class Credential:
    """One account's compiled credential (never shown: admin views show ``kind`` only)."""

    kind: str
    source: TokenSource | None = None
    signer: Signer | None = None
    api_key: str = ""  # the api_key kind's key
    fingerprint: str = ""  # changes when any of its values does: a reload that changes it starts over


def compile_credential(spec: Mapping[str, Any]) -> Credential | None:
    """The account's credential; None when a value is empty (an unset ``${VAR:-}``): the account is
    left out, as one with an empty ``api_key`` is, so the provider uses its fallback."""
    if any(v == "" for k, v in spec.items() if k not in OPTIONAL_EMPTY):
        return None
    kind = str(spec["type"])
    if kind != API_KEY and kind not in KINDS:
        raise KeyError(kind)  # the schema names every kind: only data it rejected gets here
    fingerprint = hashlib.sha256(orjson.dumps(dict(spec), option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    if kind == API_KEY:
        return Credential(kind, api_key=str(spec["key"]), fingerprint=fingerprint)
    made = KINDS[kind](spec)
    if isinstance(made, Signer):
        return Credential(kind, signer=made, fingerprint=fingerprint)
    return Credential(kind, source=made, fingerprint=fingerprint)


# values that may be empty without disabling the account (a public client has no secret)
OPTIONAL_EMPTY = frozenset({"client_secret", "scope", "session_token", "private_key_id", "subject"})


def credential_errors(loaded: LoadedConfig, rejected: Callable[[Pointer], bool]) -> list[ConfigError]:
    """A factory's refusal of a credential the schema accepted (a malformed key file), located."""
    errors = []
    providers = loaded.data.get("providers")
    for name, p in providers.items() if isinstance(providers, dict) else ():
        accounts = p.get("accounts") if isinstance(p, dict) else None
        for i, account in enumerate(accounts if isinstance(accounts, list) else ()):
            spec = account.get("credential") if isinstance(account, dict) else None
            pointer: Pointer = ("providers", name, "accounts", i, "credential")
            if not isinstance(spec, dict) or rejected(pointer):
                continue
            try:
                compile_credential(spec)
            except ValueError as e:
                errors.append(loaded.locate(pointer, f"credential of type '{spec.get('type')}': {e}"))
    return errors
