"""JSON Schema validation (Draft 2020-12) of the merged config, plus each section's cross-reference check.

Every problem becomes a located ConfigError (file:line:column, JSON pointer, plain message); all of
them are reported, not only the first.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from router.config import LoadedConfig, Pointer
from router.errors import ConfigError
from router.plan import MAX_DEPTH, MAX_TARGETS, spec_targets
from router.resources import ROOT_SCHEMA, schema_files
from router.routes import compile_path


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    """The root validator with every section schema registered for ``$ref`` (built once).

    The schemas are package data, so an installed wheel validates exactly like a checkout.
    """
    resources = []
    root: dict[str, Any] = {}
    for path in schema_files():
        doc = json.loads(path.read_text(encoding="utf-8"))
        resources.append((path.name, Resource.from_contents(doc)))
        if path.name == ROOT_SCHEMA:
            root = doc
    if not root:  # a broken install must not validate nothing and call every config valid
        raise RuntimeError(f"the package's JSON Schema {ROOT_SCHEMA} is missing: reinstall the package")
    registry: Registry = Registry().with_resources(resources)
    return Draft202012Validator(root, registry=registry)


# Where resolved values may be secrets (keys from ${VAR} / ${file:}): messages never quote them.
SECRET_FIELDS = frozenset({"api_keys", "admin_keys", "accounts", "key_list", "api_key", "key"})
# the fields of an auth key entry that hold no secret: their messages may quote the value
KEY_PUBLIC_FIELDS = frozenset({"name", "team", "models", "expires", "limits", "budget"})
ACCOUNT_PUBLIC_FIELDS = frozenset({"weight"})  # likewise in a provider's account entry
CREDENTIAL_PUBLIC_FIELDS = frozenset({"type", "token_url"})  # and in an account's credential (a kind, a URL)
# whole subtrees that may hold a credential: the OTLP exporter's headers and its endpoint's user info
SECRET_PATHS = (("telemetry", "otlp", "headers"), ("telemetry", "otlp", "endpoint"))


def _may_be_secret(path: Iterable[Any]) -> bool:
    """Whether a value may be a secret: anything in a key or account entry but its public fields
    (judged by the entry's own field, so a limit's ``rpm`` under ``limits`` is public too)."""
    fields = [p for p in path if isinstance(p, str)]
    if any(tuple(fields[:len(p)]) == p for p in SECRET_PATHS):
        return True
    first = next((i for i, p in enumerate(fields) if p in SECRET_FIELDS), None)
    if first is None:
        return False
    public = {"auth": KEY_PUBLIC_FIELDS, "providers": ACCOUNT_PUBLIC_FIELDS}.get(fields[0], frozenset())
    if fields[first + 1:first + 2] == ["credential"] and len(fields) == first + 3:
        return fields[first + 2] not in CREDENTIAL_PUBLIC_FIELDS
    return first + 1 >= len(fields) or fields[first + 1] not in public


def _redacted(err: ValidationError) -> str:
    if err.validator in ("required", "additionalProperties"):
        return str(err.message)  # names fields, never values
    if err.validator == "type":
        return f"the value is not of type {err.validator_value!r} (value not shown: it may be a secret)"
    described = err.schema.get("description") if isinstance(err.schema, dict) else None
    if described and err.validator in ("anyOf", "oneOf", "pattern"):
        return f"expected {described} (value not shown: it may be a secret)"
    return f"the value fails the '{err.validator}' check (value not shown: it may be a secret)"


def _message(err: ValidationError) -> str:
    if _may_be_secret(err.absolute_path):
        return _redacted(err)
    if err.validator in ("anyOf", "oneOf") and err.context:
        described = err.schema.get("description") if isinstance(err.schema, dict) else None
        if described:
            return f"{err.instance!r} is not valid: expected {described}"
        return str(best_match(err.context).message)
    return str(err.message)


def _located(loaded: LoadedConfig, err: ValidationError) -> list[ConfigError]:
    """One error per problem; an unknown field is located at that field, not at its parent."""
    pointer: Pointer = tuple(err.absolute_path)
    if "propertyNames" in err.absolute_schema_path and isinstance(err.instance, str):  # a name, not a value
        described = err.schema.get("description") if isinstance(err.schema, dict) else None
        expected = f"expected {described}" if described else str(err.message)
        return [loaded.locate(pointer + (err.instance,), f"the name {err.instance!r} is not valid here: {expected}")]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict) \
            and isinstance(err.schema, dict) and isinstance(err.schema.get("properties"), dict):
        allowed = sorted(err.schema["properties"])
        extra = [k for k in err.instance if k not in allowed]
        if extra:
            hint = f" (allowed: {', '.join(allowed)})"
            return [loaded.locate(pointer + (k,), f"unknown field {k!r}{hint}") for k in extra]
    return [loaded.locate(pointer, _message(err))]


def schema_errors(loaded: LoadedConfig) -> list[ConfigError]:
    """Every JSON Schema violation of the merged config, located."""
    out: list[ConfigError] = []
    errors = sorted(validator().iter_errors(loaded.data), key=lambda e: list(map(str, e.absolute_path)))
    for err in errors:
        out.extend(_located(loaded, err))
    return sorted(out, key=lambda e: (e.file, e.line, e.column))


# The cross-reference check of one section: the names it uses must exist, its own names must be unique.
# Each reads the merged data defensively: data of the wrong shape is the schema's to report.


def route_references(loaded: LoadedConfig, handlers: Collection[str]) -> list[ConfigError]:
    """Paths that compile, handlers that exist, and each method+path defined once."""
    errs: list[ConfigError] = []
    seen: dict[tuple[str, str], int] = {}
    for i, route in enumerate(_section(loaded.data, "routes", list)):
        if not isinstance(route, dict):
            continue
        errs += _route_errors(loaded, i, route, handlers)
        methods = route.get("methods") if isinstance(route.get("methods"), list) else None
        for method in methods or ["GET"]:
            key = (str(route.get("path")), str(method))
            if key in seen:
                first = loaded.locate(("routes", seen[key]), "")
                errs.append(loaded.locate(("routes", i, "path"),
                                          f"route {method} {key[0]} is already defined in {first.file}:{first.line}"))
            else:
                seen[key] = i
    return errs


def _route_errors(loaded: LoadedConfig, i: int, route: dict[str, Any], handlers: Collection[str]) -> list[ConfigError]:
    errs: list[ConfigError] = []
    if isinstance(route.get("path"), str):
        try:
            compile_path(route["path"])
        except ValueError as e:
            errs.append(loaded.locate(("routes", i, "path"), str(e)))
    handler = route.get("handler")
    if isinstance(handler, str) and handler not in handlers:
        errs.append(loaded.locate(("routes", i, "handler"), f"unknown handler '{handler}' {known(handlers)}"))
    return errs


def provider_references(loaded: LoadedConfig, handlers: Collection[str]) -> list[ConfigError]:
    """Each provider's templates, retry policy and fallback exist."""
    data = loaded.data
    providers = _section(data, "providers", dict)
    templates = _section(data, "templates", dict)
    policies = _section(data, "retry_policies", dict)
    errs: list[ConfigError] = []
    for name, prov in providers.items():
        if not isinstance(prov, dict):
            continue
        for sub, tname in _template_names(prov.get("template")).items():
            if tname not in templates:
                errs.append(loaded.locate(("providers", name, "template", *sub),
                                          f"unknown template '{tname}' {known(templates)}"))
        pol = prov.get("retry", "default")
        if isinstance(pol, str) and pol not in policies and pol != "default":
            errs.append(loaded.locate(("providers", name, "retry"),
                                      f"unknown retry policy '{pol}' {known({'default', *policies})}"))
        fb = prov.get("fallback")
        if isinstance(fb, str) and fb not in providers:
            errs.append(loaded.locate(("providers", name, "fallback"), f"unknown provider '{fb}' {known(providers)}"))
    return errs


def _template_names(tpl: Any) -> dict[tuple[str, ...], str]:
    """The template names a provider's ``template`` holds, by where under it they are written."""
    if isinstance(tpl, str):
        return {(): tpl}
    if isinstance(tpl, dict):
        return {(k,): v for k, v in tpl.items() if isinstance(v, str)}
    return {}


def mapping_references(loaded: LoadedConfig, handlers: Collection[str]) -> list[ConfigError]:
    """Every ``provider/model`` target, however nested in fallback lists and splits, names a provider
    that exists; each entry within the depth and size bounds."""
    mapping = _section(loaded.data, "model_mapping", dict)
    providers = _section(loaded.data, "providers", dict)
    entries: list[tuple[Pointer, Any]] = [
        (("model_mapping", section, pattern), target)
        for section in ("exact", "wildcard") for pattern, target in _section(mapping, section, dict).items()]
    if "default" in mapping:
        entries.append((("model_mapping", "default"), mapping["default"]))
    errs: list[ConfigError] = []
    for pointer, spec in entries:
        leaves = list(spec_targets(spec, pointer))
        for where, target, _ in leaves:
            errs.extend(_target_errors(loaded, where, target, providers))
        errs.extend(_bound_errors(loaded, pointer, leaves))
    return errs


def _bound_errors(loaded: LoadedConfig, pointer: Pointer, leaves: list[tuple[Pointer, str, int]]) -> list[ConfigError]:
    """A mapping entry nested deeper than MAX_DEPTH or holding more than MAX_TARGETS targets."""
    errs: list[ConfigError] = []
    deep = next((where for where, _, depth in leaves if depth > MAX_DEPTH), None)
    if deep is not None:
        errs.append(loaded.locate(deep, f"mapping target nested deeper than {MAX_DEPTH} levels"))
    if len(leaves) > MAX_TARGETS:
        errs.append(loaded.locate(pointer, f"mapping entry holds {len(leaves)} targets; at most {MAX_TARGETS}"))
    return errs


KNOWN_SHOWN = 30  # a config with thousands of providers does not get a thousand-name message


def known(names: Iterable[str]) -> str:
    """``(known: a, b)``: the names an unknown reference could have meant, sorted, at most KNOWN_SHOWN."""
    ordered = sorted(names)
    if not ordered:
        return "(none defined)"
    more = f", ... {len(ordered) - KNOWN_SHOWN} more" if len(ordered) > KNOWN_SHOWN else ""
    return f"(known: {', '.join(ordered[:KNOWN_SHOWN])}{more})"


def _section(data: dict[str, Any], name: str, kind: type) -> Any:
    """``data[name]`` when it has the expected type, else an empty one (the schema reports the rest)."""
    value = data.get(name)
    return value if isinstance(value, kind) else kind()


def _target_errors(loaded: LoadedConfig, pointer: Pointer, target: Any,
                   providers: dict[str, Any]) -> list[ConfigError]:
    if not isinstance(target, str) or "/" not in target:
        return []
    provider = target.split("/", 1)[0]
    if provider not in providers:
        return [loaded.locate(pointer, f"mapping target '{target}' names unknown provider '{provider}' "
                                       f"{known(providers)}")]
    return []
