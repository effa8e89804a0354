"""A config that cannot serve is rejected like any other bad edit: no files, no routes, no providers,
mapping targets without a usable account, *.yml files, files that cannot be read, every error in one
run, known names in unknown-name errors, placeholders for secrets, require_keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.auth import key_digest
from router.config import load_dir
from router.errors import ConfigErrors
from router.registry import template_filters
from router.snapshot import build, check, compile_config
from tests.conftest import MINIMAL_CONFIG, ROUTES

BASE = MINIMAL_CONFIG.replace("p:\n", "up:\n").replace("accounts: [{email: a@x, api_key: k}]",
                                                       "accounts: [{email: a@x, api_key: '${UP_KEY:-}'}]")


def errors(directory: Path, env: dict[str, str] | None = None, **kw: bool) -> list[str]:
    return [str(e) for e in check(directory, template_filters(), env=env or {}, **kw)]


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


# --- which files are config -------------------------------------------------------------------------

def test_an_empty_dir_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": "# notes\n"})
    assert errors(tmp_path) == [f"{tmp_path}: no config files (*.yaml, *.yml) in {tmp_path}"]


def test_yml_files_merge_with_yaml_files_in_one_name_order(tmp_path: Path) -> None:
    write(tmp_path, {
        "10-a.yml": MINIMAL_CONFIG,
        "20-b.yaml": "routes:\n  - {path: /b, handler: health}\n",
        "30-c.YML": "routes:\n  - {path: /c, handler: health}\n",
        "40-d.YAML": "routes:\n  - {path: /d, handler: health}\n",
    })
    loaded = load_dir(tmp_path, env={})
    assert loaded.errors == []
    assert [f for f, _ in loaded.files] == ["10-a.yml", "20-b.yaml", "30-c.YML", "40-d.YAML"]
    assert [r["path"] for r in loaded.data["routes"]] == ["/v1/chat/completions", "/b", "/c", "/d"]
    assert errors(tmp_path) == []


def test_a_config_only_in_yml_files_serves(tmp_path: Path) -> None:
    for f in ROUTES.glob("*.yaml"):
        (tmp_path / (f.stem + ".yml")).write_text(f.read_text())
    snap, loaded = build(tmp_path, 1, template_filters(), env={})
    assert len(loaded.files) == len(list(ROUTES.glob("*.yaml"))) and snap.routes.describe()


def test_hidden_and_backup_files_are_not_config_but_are_listed(tmp_path: Path) -> None:
    write(tmp_path, {"10-a.yaml": MINIMAL_CONFIG, ".hidden.yaml": "broken: [", "10-a.yaml~": "broken: [",
                     "10-a.yaml.swp": "x", "20-b.yml.bak": "x", "notes.txt": "x"})
    os.symlink("user@host.1234", tmp_path / ".#10-a.yaml")  # an Emacs lock file: a dangling symlink
    loaded = load_dir(tmp_path, env={})
    assert loaded.errors == [] and [f for f, _ in loaded.files] == ["10-a.yaml"]
    assert loaded.ignored == [".#10-a.yaml", ".hidden.yaml", "10-a.yaml.swp", "10-a.yaml~", "20-b.yml.bak"]


def test_yaml_files_in_a_subdirectory_are_listed_not_read(tmp_path: Path) -> None:
    write(tmp_path, {"10-a.yaml": MINIMAL_CONFIG})
    write(tmp_path / "team", {"20-b.yaml": "broken: [", "notes.md": "x"})
    write(tmp_path / "..2026_11_29", {"10-a.yaml": MINIMAL_CONFIG})  # a ConfigMap's hidden data dir
    write(tmp_path / "schemas", {"config.schema.json": "{}"})  # what `router init` writes
    loaded = load_dir(tmp_path, env={})
    assert loaded.errors == [] and [f for f, _ in loaded.files] == ["10-a.yaml"]
    assert loaded.ignored == ["team/20-b.yaml"]


def test_an_empty_or_comment_only_file_is_fine(tmp_path: Path) -> None:
    write(tmp_path, {"10-a.yaml": MINIMAL_CONFIG, "20-empty.yaml": "", "30-comments.yml": "# all off\n"})
    assert errors(tmp_path) == []
    assert [f for f, _ in load_dir(tmp_path, env={}).files] == ["10-a.yaml", "20-empty.yaml", "30-comments.yml"]


def test_files_that_cannot_be_read_are_errors_not_skipped(tmp_path: Path) -> None:
    write(tmp_path, {"10-a.yaml": MINIMAL_CONFIG})
    os.symlink("gone/20-b.yaml", tmp_path / "20-b.yaml")  # a half-applied ConfigMap / rsync --delete
    (tmp_path / "30-dir.yaml").mkdir()
    os.mkfifo(tmp_path / "40-fifo.yml")  # reading it would block: refused
    got = errors(tmp_path)
    assert got == [
        "20-b.yaml: cannot read: No such file or directory (a dangling symlink)",
        "30-dir.yaml: is a directory, not a config file",
        "40-fifo.yml: is not a regular file",
    ]


# --- a merged config that cannot serve ----------------------------------------------------------------

@pytest.mark.parametrize(("files", "expected"), [
    ({"10-a.yaml": "server: {port: 1}\n"},  # DIR: the config dir (no one file is to blame)
     ["DIR: at /routes no routes: the gateway would answer nothing (add a 'routes' list)",
      "DIR: at /providers no providers: no model could be served (add a 'providers' section)"]),
    ({"10-a.yaml": MINIMAL_CONFIG.split("routes:")[0]},
     ["DIR: at /routes no routes: the gateway would answer nothing"]),
    ({"10-a.yaml": MINIMAL_CONFIG, "20-b.yaml": "routes: []\n"}, []),  # routes from the other file
    ({"10-a.yaml": "routes: []\nproviders: {}\n"},
     ["10-a.yaml:1:1: at /routes no routes", "10-a.yaml:2:1: at /providers no providers"]),
], ids=["neither", "no-routes", "one-empty-list", "empty-sections"])
def test_no_routes_or_no_providers_is_rejected(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    write(tmp_path, files)
    got = errors(tmp_path)
    assert len(got) == len(expected), got
    for want, have in zip(sorted(expected), sorted(got)):
        assert have.startswith(want.replace("DIR", str(tmp_path))), (want, got)


def test_no_routes_is_not_reported_when_a_file_did_not_parse(tmp_path: Path) -> None:
    write(tmp_path, {"10-a.yaml": MINIMAL_CONFIG.split("routes:")[0], "30-routes.yaml": "routes: [\n"})
    assert [e.split(": ", 1)[1][:17] for e in errors(tmp_path)] == ["YAML syntax error"]


MAPPING = "model_mapping:\n  exact: {m: up/m}\n  wildcard: {'w*': up/*}\n  default: up/d\n"


def test_mapping_target_without_usable_account_is_rejected_at_each_entry(tmp_path: Path) -> None:
    write(tmp_path, {"10-base.yaml": BASE, "20-map.yaml": MAPPING})
    why = "provider 'up' has no usable account (api_key is empty: set UP_KEY) and no fallback"
    assert errors(tmp_path) == [
        f"20-map.yaml:2:11: at /model_mapping/exact/m mapping target 'up/m': {why}",
        f"20-map.yaml:3:14: at /model_mapping/wildcard/w* mapping target 'up/*': {why}",
        f"20-map.yaml:4:3: at /model_mapping/default mapping target 'up/d': {why}",
    ]
    assert errors(tmp_path, env={"UP_KEY": "k"}) == []


@pytest.mark.parametrize(("providers", "expected"), [
    ("  fb: {dialect: openai, base_url: http://f, template: t}\n", None),  # keyless fallback: serves
    ("  fb: {dialect: openai, base_url: http://f, template: t, accounts: [{api_key: k}]}\n", None),
    ("  fb: {dialect: openai, base_url: http://f, template: t, accounts: []}\n",
     "provider 'up' has no usable account (api_key is empty: set UP_KEY), nor has its fallback 'fb' "
     "(it lists no accounts) and no fallback"),
    ("  fb: {dialect: openai, base_url: http://f, template: t, key_list: '${FB_KEYS:-}', fallback: up}\n",
     "provider 'up' has no usable account (api_key is empty: set UP_KEY), nor has its fallback 'fb' "
     "(key_list is empty: set FB_KEYS); the fallbacks loop (up -> fb -> up)"),
], ids=["keyless-fallback", "keyed-fallback", "empty-fallback", "cycle"])
def test_fallback_chain_is_followed(tmp_path: Path, providers: str, expected: str | None) -> None:
    base = BASE.replace("    accounts:", "    fallback: fb\n    accounts:").replace("templates:", "") \
        .replace("  t: {url", "templates:\n  t: {url")
    write(tmp_path, {"10-base.yaml": base, "15-fb.yaml": "providers:\n" + providers,
                     "20-map.yaml": "model_mapping:\n  default: up/d\n"})
    got = errors(tmp_path)
    assert got == ([] if expected is None else [f"20-map.yaml:2:3: at /model_mapping/default mapping target "
                                                f"'up/d': {expected}"])


def test_an_unmapped_provider_without_keys_is_fine_unless_keys_are_required(tmp_path: Path) -> None:
    write(tmp_path, {"10-base.yaml": BASE})
    assert errors(tmp_path) == []
    expected = ["10-base.yaml:6:5: at /providers/up/accounts provider 'up' has no account with a key "
                "(api_key is empty: set UP_KEY) and require_keys is on"]
    assert errors(tmp_path, require_keys=True) == expected
    write(tmp_path, {"00-server.yaml": "server: {require_keys: true}\n"})
    assert errors(tmp_path) == expected
    assert errors(tmp_path, env={"UP_KEY": "k"}) == []


def test_require_keys_on_the_shipped_config_names_each_provider_and_variable() -> None:
    assert errors(ROUTES) == []  # the quick start keeps serving through the simulator
    got = errors(ROUTES, require_keys=True)
    assert len(got) == 3
    for provider, var, fallback in (("gemini", "GEMINI_API_KEY or GEMINI_API_KEYS", "simulator"),
                                    ("openai", "OPENAI_API_KEY", "sim-openai"),
                                    ("anthropic", "ANTHROPIC_API_KEY", "sim-anthropic")):
        line = next(e for e in got if f"provider '{provider}'" in e)
        assert f"set {var})" in line and f"it would fall back to '{fallback}'" in line, line
    keys = {"GEMINI_API_KEY": "g", "OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}
    assert errors(ROUTES, env=keys, require_keys=True) == []


def test_keyless_providers_satisfy_require_keys(tmp_path: Path) -> None:
    write(tmp_path, {"10-base.yaml": MINIMAL_CONFIG.replace("    accounts: [{email: a@x, api_key: k}]\n", ""),
                     "20-map.yaml": "model_mapping:\n  default: p/m\n"})
    snap, _ = build(tmp_path, 1, template_filters(), env={}, require_keys=True)
    assert [(a.email, a.api_key) for a in snap.providers["p"].pool.accounts] == [("p", "")]


# --- every error in one run ---------------------------------------------------------------------------

def test_template_syntax_errors_come_with_schema_and_cross_reference_errors(tmp_path: Path) -> None:
    write(tmp_path, {"10-base.yaml": MINIMAL_CONFIG, "20-bad.yaml": (
        "server: {port: high}\n"
        "providers:\n  q: {dialect: openai, base_url: http://q, template: nope}\n"
        "templates:\n  broken: {url: '{{ x', body: {}}\n"
        "response_headers:\n  X-A: '{{ model | no_such_filter }}'\n")})
    got = errors(tmp_path)
    assert [e.split(" ", 3)[2] for e in got] == ["/server/port", "/providers/q/template", "/templates/broken/url",
                                                 "/response_headers/X-A"]
    assert "unknown template 'nope' (known: broken, t)" in got[1]
    assert "template syntax error" in got[2] and "No filter named 'no_such_filter'" in got[3]


@pytest.mark.parametrize(("extra", "fragment"), [
    ("providers:\n  q: {dialect: openai, base_url: http://q, template: t, retry: slow}\n",
     "unknown retry policy 'slow' (known: default, fast)"),
    ("providers:\n  q: {dialect: openai, base_url: http://q, template: t, fallback: ghost}\n",
     "unknown provider 'ghost' (known: p, q)"),
    ("model_mapping:\n  default: ghost/m\n", "names unknown provider 'ghost' (known: p)"),
    ("providers:\n  q: {dialect: openai, base_url: http://q, template: {default: t, gemini: gone}}\n",
     "unknown template 'gone' (known: t)"),
], ids=["retry-policy", "fallback", "mapping", "per-dialect-template"])
def test_unknown_names_list_the_known_ones(tmp_path: Path, extra: str, fragment: str) -> None:
    write(tmp_path, {"10-base.yaml": MINIMAL_CONFIG + "retry_policies:\n  fast: {rules: []}\n", "20-x.yaml": extra})
    got = errors(tmp_path)
    assert len(got) == 1 and fragment in got[0], got


def test_a_long_known_list_is_cut(tmp_path: Path) -> None:
    names = "".join(f"  t{i:03}: {{url: u, body: {{}}}}\n" for i in range(100))
    write(tmp_path, {"10-base.yaml": MINIMAL_CONFIG, "20-t.yaml": "templates:\n" + names,
                     "30-q.yaml": "providers:\n  q: {dialect: openai, base_url: http://q, template: nope}\n"})
    (got,) = errors(tmp_path)
    assert "(known: t, t000, t001," in got and ", ... 71 more)" in got and len(got) < 600


@pytest.mark.parametrize("bad", [
    "providers: {p: {dialect: openai, base_url: http://x, template: t, accounts: [1, {api_key: 2}], key_list: 3, "
    "fallback: [x]}}\nmodel_mapping: {exact: {a: p/a}, wildcard: [1], default: 5}\n",
    "providers: [1]\ntemplates: [2]\nresponse_headers: [3]\nmodel_mapping: 1\nserver: {port: x, require_keys: 1}\n",
    "auth: {mode: strict, api_keys: [1, {name: 2}]}\nserver: [1]\n",
    "providers: {p: 1}\nmodel_mapping: {default: p/x}\n",
    "templates: {t: {url: '{{ 1', headers: [1, '{% if %}']}}\n",
], ids=["provider-fields", "section-types", "auth", "provider-scalar", "template-shapes"])
def test_data_the_schema_rejected_does_not_crash_later_checks(tmp_path: Path, bad: str) -> None:
    write(tmp_path, {"10-base.yaml": MINIMAL_CONFIG, "20-bad.yaml": bad})
    for require_keys in (False, True):
        with pytest.raises(ConfigErrors) as info:
            compile_config(load_dir(tmp_path, env={}), 1, template_filters(), require_keys=require_keys)
        assert info.value.errors and all(e.message for e in info.value.errors)


# --- placeholders for CI without secrets ----------------------------------------------------------------

def test_placeholder_secrets_resolve_unset_variables_and_unreadable_files(tmp_path: Path) -> None:
    write(tmp_path, {"10-base.yaml": MINIMAL_CONFIG, "20-auth.yaml": (
        "server: {allow_lan_access: true}\n"
        "auth:\n  mode: strict\n  api_keys:\n    - {name: ci, key: '${ROUTER_KEY}'}\n"
        "    - {name: file, key: '${file:/nonexistent/secret}'}\n"
        "    - {name: opt, key: '${OPT_KEY:-}'}\n    - {name: dflt, key: '${DFLT:-fixed}'}\n")})
    got = errors(tmp_path)
    # (the auth mode's missing key is a consequence of these two, not reported on its own)
    assert len(got) == 2 and "ROUTER_KEY is not set" in got[0] and "cannot read ${file:" in got[1]
    assert errors(tmp_path, placeholders=True) == []
    snap, _ = build(tmp_path, 1, template_filters(), env={}, placeholders=True)
    assert [k.digest for k in snap.auth.keys] == [key_digest(k) for k in ("placeholder-ROUTER_KEY", "placeholder-file",
                                                                         "placeholder-OPT_KEY", "fixed")]
    # a set variable keeps its value
    snap, _ = build(tmp_path, 1, template_filters(), env={"ROUTER_KEY": "real"}, placeholders=True)
    assert snap.auth.keys[0].digest == key_digest("real")


def test_placeholder_secrets_satisfy_require_keys(tmp_path: Path) -> None:
    assert errors(ROUTES, require_keys=True, placeholders=True) == []
    snap, _ = build(ROUTES, 1, template_filters(), env={}, require_keys=True, placeholders=True)
    assert [a.api_key for a in snap.providers["openai"].pool.accounts] == ["placeholder-OPENAI_API_KEY"]


def test_a_literal_empty_key_names_the_field_to_fill(tmp_path: Path) -> None:
    config = MINIMAL_CONFIG.replace("accounts: [{email: a@x, api_key: k}]",
                                    "accounts: [{email: a@x, api_key: k}, {email: b@x, api_key: \"\"}]")
    write(tmp_path, {"10-a.yaml": config.replace("api_key: k}", "api_key: \"\"}", 1) + MAPPING.replace("up/", "p/")})
    got = errors(tmp_path)
    assert got and all("set providers.p.accounts[0].api_key or providers.p.accounts[1].api_key" in e for e in got), got


def test_a_symlink_loop_is_named_as_such(tmp_path: Path) -> None:
    write(tmp_path, {"10-a.yaml": MINIMAL_CONFIG})
    os.symlink(tmp_path / "21-y.yaml", tmp_path / "20-x.yaml")
    os.symlink(tmp_path / "20-x.yaml", tmp_path / "21-y.yaml")
    assert [e for e in errors(tmp_path) if "symlink" in e] == [
        "20-x.yaml: cannot read: Too many levels of symbolic links (a symlink loop)",
        "21-y.yaml: cannot read: Too many levels of symbolic links (a symlink loop)"]
