"""router.schema: JSON Schema files, located schema errors, cross-reference checks, all errors at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from router.config import load_dir
from router.errors import ConfigError, ConfigErrors
from router.registry import template_filters
from router.resources import schema_files
from router.schema import schema_errors, validator
from router.snapshot import HANDLERS, check, compile_config, cross_reference_errors
from tests.conftest import MINIMAL_CONFIG

SECTIONS = ["server", "auth", "providers", "model_mapping", "routes", "retry_policies", "templates",
            "response_headers", "logging", "state", "prices", "usage", "circuit", "telemetry"]


def errors_for(tmp_path: Path, extra: str, base: str = MINIMAL_CONFIG) -> list[str]:
    (tmp_path / "00-base.yaml").write_text(base)
    (tmp_path / "50-extra.yaml").write_text(extra)
    return [str(e) for e in check(tmp_path, template_filters(), env={})]


def test_every_schema_file_is_valid_draft_2020_12() -> None:
    files = schema_files()
    assert {f.name for f in files} >= {f"{s}.schema.json" for s in SECTIONS} | {"config.schema.json"}
    for f in files:
        doc = json.loads(f.read_text())
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema", f.name
        Draft202012Validator.check_schema(doc)


def test_root_schema_references_one_schema_per_section() -> None:
    root = json.loads(next(f for f in schema_files() if f.name == "config.schema.json").read_text())
    assert root["additionalProperties"] is False
    assert {k: v["$ref"] for k, v in root["properties"].items()} == {s: f"{s}.schema.json" for s in SECTIONS}
    assert isinstance(validator(), Draft202012Validator)


@pytest.mark.parametrize(("doc", "valid"), [
    ({}, True),
    ({"server": {"port": 8045, "shutdown_grace": "30s"}}, True),
    ({"server": {"port": 70000}}, False),
    ({"server": {"shutdown_grace": "30 seconds"}}, False),
    ({"retry_policies": {"r": {"rules": [{"on": [429, "5xx", "timeout"], "wait": "retry_after"}]}}}, True),
    ({"retry_policies": {"r": {"rules": [{"on": ["teapot"]}]}}}, False),
    ({"model_mapping": {"exact": {"a": "p/m"}, "default": "p/m"}}, True),
    ({"model_mapping": {"default": "no-provider"}}, False),
    ({"routes": [{"path": "v1/x", "handler": "health"}]}, False),
    ({"unknown": 1}, False),
], ids=["empty", "server", "port-range", "bad-duration", "retry", "bad-outcome", "mapping", "bad-target",
        "relative-path", "unknown-section"])
def test_validator_accepts_and_rejects(doc: dict, valid: bool) -> None:
    assert validator().is_valid(doc) is valid


@pytest.mark.parametrize(("extra", "expected"), [
    ("server:\n  bogus: 1\n", "50-extra.yaml:2:3: at /server/bogus unknown field 'bogus' (allowed: "),
    ("nonsense: 1\n", "50-extra.yaml:1:1: at /nonsense unknown field 'nonsense'"),
    ("server:\n  port: '80'\n", "50-extra.yaml:2:3: at /server/port '80' is not of type 'integer'"),
    ("auth:\n  mode: sometimes\n", "50-extra.yaml:2:3: at /auth/mode 'sometimes' is not one of"),
    ("server:\n  shutdown_grace: 5 seconds\n",
     "50-extra.yaml:2:3: at /server/shutdown_grace '5 seconds' is not valid: expected seconds as a number"),
    ("retry_policies:\n  r:\n    rules:\n      - {on: [429], wait: soon}\n",
     "50-extra.yaml:4:21: at /retry_policies/r/rules/0/wait 'soon' is not valid: expected retry_after, or a duration"),
    ("routes:\n  - {handler: health}\n", "50-extra.yaml:2:5: at /routes/1 'path' is a required property"),
    ("model_mapping:\n  exact: {a: nobody}\n", "50-extra.yaml:2:11: at /model_mapping/exact/a 'nobody' does not match"),
], ids=["unknown-field", "unknown-section", "type", "enum", "duration", "retry-wait", "required", "pattern"])
def test_schema_errors_are_located(tmp_path: Path, extra: str, expected: str) -> None:
    errors = errors_for(tmp_path, extra)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(("extra", "expected"), [
    ("routes:\n  - {path: /x, handler: nope}\n",
     "50-extra.yaml:2:16: at /routes/1/handler unknown handler 'nope' (known: "),
    ("providers:\n  q: {dialect: gemini, base_url: http://g, template: missing}\n",
     "50-extra.yaml:2:44: at /providers/q/template unknown template 'missing'"),
    ("providers:\n  q: {dialect: gemini, base_url: http://g, template: t, retry: slow}\n",
     "50-extra.yaml:2:57: at /providers/q/retry unknown retry policy 'slow'"),
    ("providers:\n  q: {dialect: gemini, base_url: http://g, template: t, fallback: ghost}\n",
     "50-extra.yaml:2:57: at /providers/q/fallback unknown provider 'ghost'"),
    ("model_mapping:\n  exact: {a: ghost/m}\n",
     "50-extra.yaml:2:11: at /model_mapping/exact/a mapping target 'ghost/m' names unknown provider 'ghost'"),
    ("model_mapping:\n  wildcard: {'a*': ghost/*}\n",
     "at /model_mapping/wildcard/a* mapping target 'ghost/*' names unknown provider 'ghost'"),
    ("model_mapping:\n  default: ghost/m\n",
     "50-extra.yaml:2:3: at /model_mapping/default mapping target 'ghost/m' names unknown provider 'ghost'"),
    ("auth:\n  api_keys:\n    - {name: a, key: x}\n    - {name: a, key: y}\n",
     "50-extra.yaml:4:8: at /auth/api_keys/1/name api key name 'a' is used twice"),
    ("routes:\n  - {path: '/m/{a}/{a}', handler: health}\n",
     "50-extra.yaml:2:6: at /routes/1/path path parameter {a} is used twice"),
    ("routes:\n  - {path: '/m/{a', handler: health}\n", "at /routes/1/path bad path parameter"),
    ("auth:\n  mode: strict\n",
     "50-extra.yaml:2:3: at /auth/mode auth mode 'strict' needs at least one api key with a non-empty key"),
    ("auth:\n  mode: strict\n  api_keys: [{name: a, key: ''}]\n", "auth mode 'strict' needs at least one api key"),
    ("templates:\n  u: {url: '{{ x', body: {}}\n", "50-extra.yaml:2:7: at /templates/u/url template syntax error"),
    ("response_headers:\n  X-A: '{{ x | no_such_filter }}'\n",
     "50-extra.yaml:2:3: at /response_headers/X-A template syntax error: No filter named 'no_such_filter'"),
], ids=["handler", "template", "retry-policy", "fallback", "mapping-exact", "mapping-wildcard",
        "mapping-default", "api-key-name", "path-param-twice", "path-brace", "strict-no-keys",
        "strict-empty-key", "template-syntax", "unknown-filter"])
def test_cross_reference_errors_are_located(tmp_path: Path, extra: str, expected: str) -> None:
    errors = errors_for(tmp_path, extra)
    assert any(expected in e for e in errors), errors


def test_all_errors_are_reported_not_only_the_first(tmp_path: Path) -> None:
    (tmp_path / "10-a.yaml").write_text(
        "server:\n  port: high\n  colour: blue\nauth:\n  mode: sometimes\n")
    (tmp_path / "20-b.yaml").write_text(
        "providers:\n  p: {dialect: cobol, base_url: http://x, template: t}\n"
        "routes:\n  - {path: /x, methods: [FETCH], handler: health}\n")
    (tmp_path / "30-c.yaml").write_text("server: {port: 1\n")
    with pytest.raises(ConfigErrors) as info:
        compile_config(load_dir(tmp_path, env={}), 1, template_filters())
    got = [str(e) for e in info.value.errors]
    expected = [  # schema and cross-reference errors together, in file:line order
        "10-a.yaml:2:3: at /server/port 'high' is not of type 'integer'",
        "10-a.yaml:3:3: at /server/colour unknown field 'colour'",
        "10-a.yaml:5:3: at /auth/mode 'sometimes' is not one of",
        "20-b.yaml:2:7: at /providers/p/dialect 'cobol' is not one of",
        "20-b.yaml:2:43: at /providers/p/template unknown template 't'",
        "20-b.yaml:4:26: at /routes/0/methods/0 'FETCH' is not one of",
        "30-c.yaml:2:1: YAML syntax error",
    ]
    assert len(got) == len(expected)
    for want, have in zip(expected, got):
        assert have.startswith(want), (want, got)
    assert str(info.value) == "\n".join(got)


def test_all_cross_reference_errors_are_reported(tmp_path: Path) -> None:
    errors = errors_for(tmp_path, (
        "routes:\n  - {path: /x, handler: nope}\n"
        "providers:\n  q: {dialect: gemini, base_url: http://g, template: missing, retry: slow, fallback: ghost}\n"
        "model_mapping:\n  default: ghost/m\n"))
    assert len(errors) == 5
    for fragment in ("unknown handler 'nope'", "unknown template 'missing'", "unknown retry policy 'slow'",
                     "/fallback unknown provider 'ghost'", "names unknown provider 'ghost'"):
        assert sum(fragment in e for e in errors) == 1, (fragment, errors)


def test_every_error_is_a_located_config_error(tmp_path: Path) -> None:
    (tmp_path / "00.yaml").write_text("server:\n  port: x\nroutes: {a: 1}\nproviders: []\n")
    loaded = load_dir(tmp_path, env={})
    errs = schema_errors(loaded)
    assert len(errs) == 3
    for e in errs:
        assert isinstance(e, ConfigError) and e.file == "00.yaml" and e.line > 0 and e.column > 0
        assert e.pointer.startswith("/")
    # cross-reference checks tolerate data the schema already rejected
    assert cross_reference_errors(loaded, HANDLERS) == []


def test_valid_base_has_no_errors(tmp_path: Path) -> None:
    assert errors_for(tmp_path, "server: {port: 9000}\n") == []
