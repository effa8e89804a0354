"""Can the config serve? Every mapping target must reach a provider with a usable account.

A provider without a usable account (every ``api_key`` empty, an empty ``key_list``, an empty
``accounts`` list) hands its requests to its ``fallback``; a mapping target whose chain of fallbacks
ends without an account could only ever answer 503, so it is a config error located at the mapping
entry. With ``require_keys`` (``server.require_keys`` or ``--require-keys``) a provider without a
usable account is an error itself: a production config never silently serves from its fallback (the
simulator). Each message names the provider and what to set, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from router.accounts import compile_accounts
from router.config import LoadedConfig, Pointer, variables
from router.errors import ConfigError
from router.plan import spec_targets

_FILE = re.compile(r"\$\{file:([^}]*)\}")  # a key read from a file: hints name the file

Rejected = Callable[[Pointer], bool]  # whether the schema already rejected data at or under a pointer


def provider_errors(loaded: LoadedConfig, require_keys: bool, rejected: Rejected) -> list[ConfigError]:
    """Mapping targets without a usable account at the end of their fallbacks; with ``require_keys``
    also every provider without a usable account."""
    providers = _providers(loaded, rejected)
    missing = {name: _why(loaded, name, section) for name, section in providers.items()
               if not compile_accounts(name, section)}
    errors: list[ConfigError] = []
    if require_keys:
        errors += [_require_keys_error(loaded, name, providers[name], why) for name, why in missing.items()]
    for pointer, target in _targets(loaded.data.get("model_mapping")):
        name = target.split("/", 1)[0]
        if rejected(pointer) or name not in missing:
            continue  # unknown providers are cross-reference errors; rejected data is reported already
        problem = _chain_problem(name, providers, missing, loaded, rejected)
        if problem:
            errors.append(loaded.locate(pointer, f"mapping target '{target}': {problem}"))
    return errors


def _providers(loaded: LoadedConfig, rejected: Rejected) -> dict[str, dict[str, Any]]:
    section = loaded.data.get("providers")
    if not isinstance(section, dict):
        return {}
    return {name: p for name, p in section.items() if isinstance(p, dict) and not rejected(("providers", name))}


def _targets(mapping: Any) -> list[tuple[Pointer, str]]:
    """(pointer, target) of every exact, wildcard and default target, in fallback lists and splits too."""
    if not isinstance(mapping, dict):
        return []
    entries: list[tuple[Pointer, Any]] = []
    for kind in ("exact", "wildcard"):
        section = mapping.get(kind)
        if isinstance(section, dict):
            entries += [(("model_mapping", kind, str(k)), v) for k, v in section.items()]
    if "default" in mapping:
        entries.append((("model_mapping", "default"), mapping["default"]))
    return [(where, target) for pointer, spec in entries for where, target, _ in spec_targets(spec, pointer)]


def _chain_problem(name: str, providers: dict[str, dict[str, Any]], missing: dict[str, str],
                   loaded: LoadedConfig, rejected: Rejected) -> str | None:
    """Why following ``name``'s fallbacks ends without an account, or None when it reaches one."""
    text = f"provider '{name}' has no usable account ({missing[name]})"
    seen = [name]
    while True:
        fallback = providers[name].get("fallback")
        if not isinstance(fallback, str):
            return text + " and no fallback"
        if fallback not in providers or rejected(("providers", name, "fallback")):
            return None  # an unknown or rejected fallback is reported on its own
        if fallback in seen:
            return text + f"; the fallbacks loop ({' -> '.join([*seen, fallback])})"
        if fallback not in missing:
            return None
        text += f", nor has its fallback '{fallback}' ({missing[fallback]})"
        seen.append(fallback)
        name = fallback


def key_sources(loaded: LoadedConfig, name: str, section: dict[str, Any]) -> tuple[list[Pointer], list[str], list[str]]:
    """Where a provider's keys come from: the key fields it has (``accounts[i].api_key``,
    ``key_list``), the variables they read and the files (``${file:...}``) they read. Names only."""
    accounts = section["accounts"] if isinstance(section.get("accounts"), list) else []
    fields: list[Pointer] = [("accounts", i, "api_key") for i, a in enumerate(accounts)
                             if isinstance(a, dict) and "api_key" in a]
    fields += [("accounts", i, "credential", k) for i, a in enumerate(accounts)  # its values read from ${...}
               if isinstance(a, dict) and isinstance(a.get("credential"), dict) for k in a["credential"]
               if ("providers", name, "accounts", i, "credential", k) in loaded.sources]
    if "key_list" in section:
        fields.append(("key_list",))
    texts = [loaded.sources.get(("providers", name, *p), "") for p in fields]
    names = list(dict.fromkeys(v for text in texts for v in variables(text)))
    files = list(dict.fromkeys(f for text in texts for f in _FILE.findall(text)))
    return fields, names, files


def key_hint(names: list[str], files: list[str]) -> str:
    """``set A or B or put a key in F`` ('' when the keys come from no variable or file)."""
    hints = ([f"set {' or '.join(names)}"] if names else []) + [f"put a key in {f}" for f in files]
    return " or ".join(hints)


def _why(loaded: LoadedConfig, name: str, section: dict[str, Any]) -> str:
    """What is empty and what to set, e.g. ``api_key and key_list are empty: set GEMINI_API_KEY or
    GEMINI_API_KEYS``. Names variables and fields, never values."""
    empty, names, files = key_sources(loaded, name, section)
    if not empty:
        return "it lists no accounts"
    fields = sorted({str(p[-1]) if p[0] == "accounts" else "key_list" for p in empty})
    what = " and ".join(fields) + (" is" if len(fields) == 1 else " are") + " empty"
    hint = key_hint(names, files) or "set " + " or ".join(_field(name, p) for p in empty)
    return f"{what}: {hint}"


def _field(provider: str, pointer: Pointer) -> str:
    """``providers.x.accounts[0].api_key`` for ``("accounts", 0, "api_key")``."""
    return f"providers.{provider}" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in pointer)


def _require_keys_error(loaded: LoadedConfig, name: str, section: dict[str, Any], why: str) -> ConfigError:
    where = next((k for k in ("accounts", "key_list") if k in section), None)
    pointer: Pointer = ("providers", name, where) if where else ("providers", name)
    fallback = section.get("fallback")
    instead = f"; it would fall back to '{fallback}'" if isinstance(fallback, str) else ""
    return loaded.locate(pointer, f"provider '{name}' has no account with a key ({why}) and require_keys "
                                  f"is on{instead}")
