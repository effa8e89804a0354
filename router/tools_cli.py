"""The GitOps commands: ``router explain``, ``router test`` and ``router diff`` (offline, on config dirs).

Exit codes: 0 done (explain: whatever the explained status; test: every case passed; diff: also when
there are differences, unless ``--exit-code``), 1 test failures (or differences with ``diff
--exit-code``), 2 a config dir (or a cases file) is invalid: its located errors on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from router.errors import ConfigError, ConfigErrors
from router.snapshot import Snapshot

INVALID = 2
USAGE = 2  # a bad option's value: argparse's exit status


def offline_snapshot(directory: Path) -> Snapshot:
    """A config dir compiled as ``router check`` does (environment variables resolved from this
    process; a provider without a key served by its fallback, as at run time); raises ConfigErrors."""
    from router.config import load_dir
    from router.registry import template_filters
    from router.snapshot import compile_config

    return compile_config(load_dir(directory), 0, template_filters())


def print_errors(errors: list[ConfigError], directory: Path | str) -> int:
    for e in errors:
        print(str(e))
    print(f"{len(errors)} error(s) in {directory}", file=sys.stderr)
    return INVALID


def cmd_explain(args: argparse.Namespace) -> int:
    from router.cli import _config_dir
    from router.explain import ExplainRequest, explain

    directory = _config_dir(args.dir)
    try:
        snap = offline_snapshot(directory)
    except ConfigErrors as e:
        return print_errors(e.errors, directory)
    try:
        body, headers = _request_parts(args.body, args.header or [])
    except ValueError as e:
        print(f"router explain: {e}", file=sys.stderr)
        return USAGE
    req = ExplainRequest(path=args.path, method=args.method, headers=headers,
                         body=body, model=args.model, key=args.key, stream=args.stream)
    out = explain(snap, req)
    print(json.dumps(out, indent=2) if args.format == "json" else explain_text(out))
    return 0


def _request_parts(body_arg: str | None, header_args: list[str]) -> tuple[Any, dict[str, str]]:
    """``--body`` (a file, or ``-`` for stdin) as JSON and ``--header 'Name: value'`` lines; a
    ValueError naming the option that is wrong."""
    body: Any = None
    if body_arg is not None:
        where = "stdin" if body_arg == "-" else body_arg
        try:
            text = sys.stdin.read() if body_arg == "-" else Path(body_arg).read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"--body {where}: cannot read it ({type(e).__name__}: {e.strerror})") from None
        except UnicodeDecodeError:
            raise ValueError(f"--body {where}: cannot read it (not UTF-8)") from None
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--body {where}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    headers: dict[str, str] = {}
    for line in header_args:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"--header {line!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return body, headers


def explain_text(out: dict[str, Any]) -> str:
    """An explanation as lines, step by step, for a terminal."""
    lines = [f"request: {out['request']['method']} {out['request']['path']}"]
    route = out.get("route", {})
    if route.get("matched"):
        lines.append(f"route:   {route['path']} -> {route['handler']} (auth: {route['auth']})")
    elif route:
        lines.append(f"route:   none ({route['why']})")
    auth = out.get("auth")
    if auth:
        lines.append(f"auth:    mode {auth['mode']}: {auth.get('decision', '')}")
        key = auth.get("key")
        if key:
            lines.append(f"         key {key['name']} (by {key['found_by']}): team {key.get('team')}, "
                         f"models {key.get('models') or 'all'}, expires {key.get('expires') or 'never'}"
                         + (f", limits {key['limits']}" if key.get("limits") else "")
                         + (f", budget {key['budget']}" if key.get("budget") else ""))
    lines += _mapping_lines(out.get("mapping"))
    lines += _pool_lines(out.get("pools", []))
    lines += _upstream_lines(out)
    lines.append(f"status:  {out['status']}" + (f" ({out['error']})" if out.get("error") else ""))
    if out.get("note"):
        lines.append(f"note:    {out['note']}")
    return "\n".join(lines)


def _mapping_lines(mapping: dict[str, Any] | None) -> list[str]:
    from router.explain import target_text

    if not mapping:
        return []
    lines = [f"mapping: model '{mapping['model']}' -> rule {mapping['rule'] or 'none'}"]
    for step in mapping["tried"]:
        if step.get("shadowed") is False:  # a pattern after the decision that would not match either
            continue
        what = step["rule"] + (f" {step['pattern']}" if "pattern" in step else "")
        lines.append(f"         {'+' if step['matched'] else '-'} {what}: {step['why']}")
    if "target" in mapping:
        lines.append(f"target:  {target_text(mapping['target'])}")
    return lines


def _pool_lines(pools: list[dict[str, Any]]) -> list[str]:
    lines = []
    for p in pools:
        served = f" -> served by {p['served_by']} ({p['why']})" if "served_by" in p else ""
        lines.append(f"pool:    {p['provider']}{served}: {p.get('dialect')} {p.get('base_url')}, "
                     f"scheduling {p.get('scheduling')}")
        for a in p.get("accounts", []):
            live = f" {a['state']}, {a['in_flight']} in flight" if "state" in a else ""
            label = f" ({a['label']})" if a["label"] != a["id"] else ""
            lines.append(f"         account {a['id']}{label} weight {a['weight']}{live}")
    return lines


def _upstream_lines(out: dict[str, Any]) -> list[str]:
    up = out.get("upstream")
    if not up:
        return []
    lines = [f"upstream: {up['method']} {up['url']}  (provider {up['provider']}, account {up['account']}, "
             f"template {out.get('template')})"]
    lines += [f"          {k}: {v}" for k, v in up["headers"].items()]
    lines.append(f"          {json.dumps(up['body'])}")
    lines += [f"response header: {k}: {v}" for k, v in out.get("response_headers", {}).items()]
    return lines


def add_parsers(sub: Any, dir_help: str) -> None:
    """The explain, test and diff subcommands (``sub``: the main parser's subparsers)."""
    e = sub.add_parser("explain", help="show what the gateway would do with one request (offline, nothing sent)")
    e.add_argument("dir", nargs="?", help=dir_help)
    e.add_argument("--model", help="the client model (an OpenAI chat body is made up when no --body)")
    e.add_argument("--key", help="a client key by its name in auth.api_keys (as if the client presented it)")
    e.add_argument("--path", default="/v1/chat/completions", help="request path (default /v1/chat/completions)")
    e.add_argument("--method", default="POST")
    e.add_argument("--header", action="append", help="'Name: value' (repeatable)")
    e.add_argument("--body", help="a JSON request body: a file, or - for stdin")
    e.add_argument("--stream", action="store_true", help="with --model: a streaming request")
    e.add_argument("--format", choices=["text", "json"], default="text")
    e.set_defaults(func=cmd_explain)
    t = sub.add_parser("test", help="run a config's test cases offline (exit 0 all pass, 1 failures, 2 invalid)")
    t.add_argument("dir", nargs="?", help=dir_help)
    t.add_argument("--cases", help="a cases file, or a dir of *.yaml (default DIR/tests/*.yaml)")
    t.add_argument("--placeholder-secrets", action="store_true",
                   help="an unset ${VAR} without a default resolves to 'placeholder-VAR' (as router check's)")
    t.set_defaults(func=cmd_test)
    d = sub.add_parser("diff", help="what a config change means for clients: models, routes, auth, keys, "
                                    "providers, prices (exit 0; 2 when a dir is invalid)")
    d.add_argument("old", help="the config dir before the change")
    d.add_argument("new", help="the config dir after the change")
    d.add_argument("--format", choices=["text", "markdown"], default="text", help="markdown: for a PR comment")
    d.add_argument("--exit-code", action="store_true", help="exit 1 when there are changes (as git diff's)")
    d.set_defaults(func=cmd_diff)


def cmd_test(args: argparse.Namespace) -> int:
    from router.cli import _config_dir
    from router.config import load_dir
    from router.config_tests import case_files, load_cases, report, run_case
    from router.registry import template_filters
    from router.snapshot import compile_config

    directory = _config_dir(args.dir)
    paths = case_files(directory, Path(args.cases) if args.cases else None)
    if not paths:
        print(f"router test: no cases (*.yaml) in {args.cases or directory / 'tests'}", file=sys.stderr)
        return INVALID
    cases, errors = load_cases(paths)
    try:  # no secret is read: every ${VAR:-default} takes its default (see router.config_tests)
        snap = compile_config(load_dir(directory, {}, args.placeholder_secrets), 0, template_filters())
    except ConfigErrors as e:
        errors = [*e.errors, *errors]
    if errors:
        return print_errors(errors, directory)
    results = [(case, run_case(snap, case)) for case in cases]
    print(report(results))
    return 1 if any(m for _, m in results) else 0


def cmd_diff(args: argparse.Namespace) -> int:
    from router.config import load_dir
    from router.config_diff import diff, markdown, text
    from router.registry import template_filters
    from router.snapshot import compile_config

    snaps, errors = [], []
    for directory in (args.old, args.new):  # no secret read: placeholders count every key as set
        try:
            snaps.append(compile_config(load_dir(directory, {}, True), 0, template_filters()))
        except ConfigErrors as e:
            errors += [ConfigError(x.file if Path(x.file) == Path(directory) else str(Path(directory, x.file)),
                                   x.line, x.column, x.pointer, x.message) for x in e.errors]
    if errors:
        return print_errors(errors, f"{args.old} or {args.new}")
    changes = diff(snaps[0], snaps[1])
    print((markdown if args.format == "markdown" else text)(changes, args.old, args.new))
    return 1 if args.exit_code and changes else 0
