"""Checks of a loaded config beyond its schema and its cross references: completeness (some routes,
some providers) and auth keys for a mode that needs them.

Each skips the data the schema (or ``${...}`` resolution) rejected instead of tripping over it.
"""

from __future__ import annotations

from router.config import LoadedConfig, Pointer, pointer_text
from router.errors import ConfigError
from router.reachability import Rejected
from router.server import listener


def rejected_by(found: list[ConfigError]) -> Rejected:
    """Whether the schema (or ``${...}`` resolution) rejected the data at, above or under a pointer."""
    bad = [e.pointer for e in found if e.pointer]

    def rejected(pointer: Pointer) -> bool:
        text = pointer_text(pointer)
        return any(b == text or b.startswith(text + "/") or text.startswith(b + "/") for b in bad)

    return rejected


def completeness_errors(loaded: LoadedConfig, rejected: Rejected) -> list[ConfigError]:
    """A config with no routes answers nothing, one with no providers serves no model. Not reported
    when a file could not be read or parsed: its routes may be the missing ones."""
    if any(not e.pointer for e in loaded.errors):
        return []
    errors = []
    for section, what in (("routes", "no routes: the gateway would answer nothing (add a 'routes' list)"),
                          ("providers", "no providers: no model could be served (add a 'providers' section)")):
        if not loaded.data.get(section) and not rejected((section,)):
            errors.append(loaded.locate((section,), what))
    return errors


def auth_errors(loaded: LoadedConfig, bind_host: str | None, rejected: Rejected) -> list[ConfigError]:
    """A mode that needs keys with none defined: a LAN-exposed gateway never runs open by accident."""
    if rejected(("auth",)) or rejected(("server",)):
        return []
    data = loaded.data
    try:
        _, auth = listener(data, bind_host)
    except ValueError:  # an expiry that is no real date: the auth section's own check reports it
        return []
    if auth.mode == "off" or auth.keys:
        return []
    written = (data.get("auth") or {}).get("mode", "auto")
    why = f"auth mode '{written}'" + (f" (= {auth.mode} on a non-loopback listener)" if written == "auto" else "")
    return [loaded.locate(("auth", "mode") if data.get("auth") else ("server", "allow_lan_access"),
                          f"{why} needs at least one api key with a non-empty key")]
