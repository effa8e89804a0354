"""JSON Schema validation (Draft 2020-12) of the merged config, plus cross-reference checks.

Every problem becomes a located ConfigError (file:line:column, JSON pointer, plain message); all of
them are reported, not only the first.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from router.config import LoadedConfig, Pointer
from router.errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
ROOT_SCHEMA = "config.schema.json"


@lru_cache(maxsize=4)
def validator(schema_dir: str = str(SCHEMA_DIR)) -> Draft202012Validator:
    """The root validator with every section schema registered for ``$ref`` (built once)."""
    resources = []
    root: dict[str, Any] = {}
    for path in sorted(Path(schema_dir).glob("*.schema.json")):
        doc = json.loads(path.read_text())
        resources.append((path.name, Resource.from_contents(doc)))
        if path.name == ROOT_SCHEMA:
            root = doc
    registry: Registry = Registry().with_resources(resources)
    return Draft202012Validator(root, registry=registry)


def _message(err: ValidationError) -> str:
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted((err.schema.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}{hint}"
    if err.validator in ("anyOf", "oneOf") and err.context:
        best = min(err.context, key=lambda e: len(e.message))
        return best.message
    return err.message


def schema_errors(loaded: LoadedConfig) -> list[ConfigError]:
    """Every JSON Schema violation of the merged config, located."""
    out = []
    errors = sorted(validator().iter_errors(loaded.data), key=lambda e: list(map(str, e.absolute_path)))
    for err in errors:
        pointer: Pointer = tuple(err.absolute_path)
        out.append(loaded.locate(pointer, _message(err)))
    return out


def cross_reference_errors(loaded: LoadedConfig, handlers: frozenset[str]) -> list[ConfigError]:
    """Names that must exist: handlers, providers, templates, retry policies; duplicate routes/keys."""
    data = loaded.data
    errs: list[ConfigError] = []
    providers = data.get("providers") or {}
    templates = data.get("templates") or {}
    policies = data.get("retry_policies") or {}

    seen: dict[tuple[str, str], int] = {}
    for i, route in enumerate(data.get("routes") or []):
        if not isinstance(route, dict):
            continue
        handler = route.get("handler")
        if isinstance(handler, str) and handler not in handlers:
            errs.append(loaded.locate(("routes", i, "handler"),
                                      f"unknown handler '{handler}' (known: {', '.join(sorted(handlers))})"))
        for method in route.get("methods") or ["GET"]:
            key = (str(route.get("path")), str(method))
            if key in seen:
                first = loaded.locate(("routes", seen[key]), "")
                errs.append(loaded.locate(("routes", i, "path"),
                                          f"route {method} {key[0]} is already defined in {first.file}:{first.line}"))
            else:
                seen[key] = i

    for name, prov in providers.items():
        if not isinstance(prov, dict):
            continue
        tpl = prov.get("template")
        if isinstance(tpl, str) and tpl not in templates:
            errs.append(loaded.locate(("providers", name, "template"), f"unknown template '{tpl}'"))
        pol = prov.get("retry", "default")
        if isinstance(pol, str) and pol not in policies and pol != "default":
            errs.append(loaded.locate(("providers", name, "retry"), f"unknown retry policy '{pol}'"))
        fb = prov.get("fallback")
        if isinstance(fb, str) and fb not in providers:
            errs.append(loaded.locate(("providers", name, "fallback"), f"unknown provider '{fb}'"))

    mapping = data.get("model_mapping") or {}
    if isinstance(mapping, dict):
        for section in ("exact", "wildcard"):
            for pattern, target in (mapping.get(section) or {}).items():
                errs.extend(_target_errors(loaded, ("model_mapping", section, pattern), target, providers))
        if "default" in mapping:
            errs.extend(_target_errors(loaded, ("model_mapping", "default"), mapping["default"], providers))

    names: dict[str, int] = {}
    for i, key in enumerate((data.get("auth") or {}).get("api_keys") or []):
        if isinstance(key, dict) and isinstance(key.get("name"), str):
            if key["name"] in names:
                errs.append(loaded.locate(("auth", "api_keys", i, "name"),
                                          f"api key name '{key['name']}' is used twice"))
            names[key["name"]] = i
    return errs


def _target_errors(loaded: LoadedConfig, pointer: Pointer, target: Any,
                   providers: dict[str, Any]) -> list[ConfigError]:
    if not isinstance(target, str) or "/" not in target:
        return []
    provider = target.split("/", 1)[0]
    if provider not in providers:
        return [loaded.locate(pointer, f"mapping target '{target}' names unknown provider '{provider}'")]
    return []
