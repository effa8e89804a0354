"""``router test``: unit tests for a config dir, each case a request explained offline and its expectations.

Cases live beside the config, in ``DIR/tests/*.yaml`` by default (a subdirectory: the config loader
reads only the dir itself), and are validated against ``schemas/config-tests.schema.json`` with
``file:line:col`` errors like the config. The config is compiled with an empty environment (every
``${VAR:-default}`` takes its default; no secret is read): a provider without a key is served by its
``fallback`` as at run time, so a run gives the same answer on every machine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from ruamel.yaml.error import MarkedYAMLError

from router.config import TESTS_DIR, LoadedConfig, _Reader, is_config_name
from router.errors import ConfigError
from router.explain import ExplainRequest, explain, request_from_json, target_leaves
from router.snapshot import Snapshot
from router.yaml_tree import TreeReader, YamlNodeError

CASES_DIR = TESTS_DIR
SCHEMA = "config-tests.schema.json"
ABSENT = "(absent)"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    where: str  # file:line of the case
    request: ExplainRequest
    expect: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Mismatch:
    field: str
    expected: Any
    got: Any


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    doc = json.loads((files("router") / "schemas" / SCHEMA).read_text(encoding="utf-8"))
    return Draft202012Validator(doc)


def case_files(config_dir: Path, cases: Path | None) -> list[Path]:
    """The cases files: ``cases`` (a file, or a dir's ``*.yaml``), else ``config_dir/tests/*.yaml``."""
    where = cases if cases is not None else config_dir / CASES_DIR
    if where.is_file():
        return [where]
    if not where.is_dir():
        return []
    return sorted(p for p in where.iterdir() if is_config_name(p.name) and p.is_file())


def load_cases(paths: list[Path]) -> tuple[list[Case], list[ConfigError]]:
    """Every case of ``paths``, or the located problems of the files."""
    cases: list[Case] = []
    errors: list[ConfigError] = []
    for path in paths:
        loaded = _read(path)
        if loaded.errors:
            errors += loaded.errors
            continue
        problems = [_located(loaded, e) for e in _validator().iter_errors(loaded.data)]
        if problems:
            errors += problems
            continue
        for i, entry in enumerate(loaded.data["tests"]):
            at = loaded.locate(("tests", i), "")
            cases.append(Case(entry["name"], f"{at.file}:{at.line}", request_from_json(entry["request"]),
                              entry["expect"]))
    return cases, sorted(errors, key=lambda e: (e.file, e.line, e.column))


def _read(path: Path) -> LoadedConfig:
    name = str(path)
    errors: list[ConfigError] = []
    try:
        tree = TreeReader().read(path.read_bytes())
    except OSError as e:
        return LoadedConfig({}, {}, [], [ConfigError(name, 0, 0, "", f"cannot read: {e.strerror}")])
    except (MarkedYAMLError, YamlNodeError) as e:
        mark = getattr(e, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (getattr(e, "line", 0),
                                                                                  getattr(e, "column", 0))
        return LoadedConfig({}, {}, [], [ConfigError(name, line, column, "", f"YAML error: {e}")])
    locations: dict[Any, Any] = {}
    data = _Reader(name, {}, locations, errors, path.parent).plain(tree, ())
    return LoadedConfig(data if isinstance(data, dict) else {"tests": None}, locations, [], errors, source=name)


def _located(loaded: LoadedConfig, err: Any) -> ConfigError:
    pointer = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        extra = [k for k in err.instance if k not in err.schema.get("properties", {})]
        if extra:
            return loaded.locate((*pointer, extra[0]), f"unknown field {extra[0]!r} "
                                                       f"(allowed: {', '.join(sorted(err.schema['properties']))})")
    return loaded.locate(pointer, str(err.message))


def run_case(snap: Snapshot, case: Case) -> list[Mismatch]:
    """What differs between the case's expectations and the explanation of its request."""
    got = observed(explain(snap, case.request))
    out: list[Mismatch] = []
    for name, expected in case.expect.items():
        if name == "error":
            text = got.get("error") or ""
            if expected not in text:
                out.append(Mismatch("error", f"contains {expected!r}", text or ABSENT))
        elif name in ("upstream", "response_headers"):
            out += _nested(name, expected, got.get(name))
        elif got.get(name, ABSENT) != expected:
            out.append(Mismatch(name, expected, got.get(name, ABSENT)))
    return out


def observed(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields of an explanation a case may expect, flat."""
    mapping = doc.get("mapping") or {}
    leaves = list(target_leaves(mapping["target"])) if "target" in mapping else []
    key = (doc.get("auth") or {}).get("key") or {}
    got: dict[str, Any] = {"status": doc["status"], "error": doc.get("error"),
                           "handler": (doc.get("route") or {}).get("handler"), "rule": mapping.get("rule"),
                           "provider": leaves[0]["provider"] if leaves else None,
                           "upstream_model": leaves[0]["model"] if leaves else None,
                           "key": key.get("name"), "response_headers": doc.get("response_headers")}
    up = doc.get("upstream")
    if up is not None:
        got["served_by"] = up["provider"]
        got["upstream"] = up
    return {k: v for k, v in got.items() if v is not None}


def _nested(name: str, expected: Mapping[str, Any], got: Any) -> list[Mismatch]:
    if not isinstance(got, dict):
        return [Mismatch(name, expected, ABSENT)]
    if name == "response_headers":
        return _header_mismatches(name, expected, got)
    out: list[Mismatch] = []
    for part, want in expected.items():
        if part == "body":
            out += [m for ptr, value in want.items() if (m := _pointer_mismatch(got.get("body"), ptr, value))]
        elif part == "headers":
            out += _header_mismatches(f"{name}.headers", want, got.get("headers") or {})
        elif got.get(part) != want:
            out.append(Mismatch(f"{name}.{part}", want, got.get(part, ABSENT)))
    return out


def _header_mismatches(where: str, wanted: Mapping[str, Any], headers: Mapping[str, str]) -> list[Mismatch]:
    lower = {k.lower(): v for k, v in headers.items()}
    out = []
    for k, v in wanted.items():
        value = lower.get(k.lower())
        if value != (None if v is None else str(v)):
            out.append(Mismatch(f"{where}[{k}]", ABSENT if v is None else v, ABSENT if value is None else value))
    return out


def _pointer_mismatch(body: Any, pointer: str, expected: Any) -> Mismatch | None:
    got = resolve_pointer(body, pointer)
    if expected is None and got in (None, ABSENT) or got == expected:
        return None
    return Mismatch(f"upstream.body{pointer}", ABSENT if expected is None else expected, got)


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """RFC 6901: the value at ``pointer`` in ``doc``, or ``ABSENT``."""
    if pointer == "":
        return doc
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            return ABSENT
    return doc


def report(results: list[tuple[Case, list[Mismatch]]]) -> str:
    """One line per case (ok / FAIL), each failure's fields as expected vs got, and a summary line."""
    lines = []
    for case, mismatches in results:
        lines.append(f"{'ok  ' if not mismatches else 'FAIL'} {case.name}  ({case.where})")
        for m in mismatches:
            lines.append(f"       {m.field}:")
            lines.append(f"         expected: {json.dumps(m.expected)}")
            lines.append(f"         got:      {json.dumps(m.got)}")
    failed = sum(1 for _, m in results if m)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
