"""router.config: merge order, locations, ${...} resolution, duplicates across files, YAML errors."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.config import Location, load_dir, pointer_text, resolve_env
from router.errors import ConfigError, ConfigErrors
from router.registry import template_filters
from router.snapshot import Snapshot, check, compile_config
from tests.conftest import MINIMAL_CONFIG


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_files_merge_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, {
        "20-b.yaml": "routes:\n  - {path: /b, handler: health}\n",
        "10-a.yaml": "routes:\n  - {path: /a, handler: health}\nserver: {port: 1}\n",
        "30-c.yaml": "server: {host: 127.0.0.2}\n",
        "notes.txt": "ignored: [",
    })
    loaded = load_dir(tmp_path, env={})
    assert loaded.errors == []
    assert [f for f, _ in loaded.files] == ["10-a.yaml", "20-b.yaml", "30-c.yaml"]
    assert [r["path"] for r in loaded.data["routes"]] == ["/a", "/b"]
    assert loaded.data["server"] == {"port": 1, "host": "127.0.0.2"}
    # the appended list item keeps the location of the file it came from
    assert loaded.locations[("routes", 1)] == Location("20-b.yaml", 2, 5)
    assert loaded.locations[("server", "host")] == Location("30-c.yaml", 1, 10)


def test_locations_are_one_based_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, {"00.yaml": "# comment\nserver:\n  port: 8045\n  allow_lan_access: false\n"})
    loaded = load_dir(tmp_path, env={})
    assert loaded.locations[("server",)] == Location("00.yaml", 2, 1)
    assert loaded.locations[("server", "allow_lan_access")] == Location("00.yaml", 4, 3)
    err = loaded.locate(("server", "allow_lan_access", "deeper"), "boom")
    assert str(err) == "00.yaml:4:3: at /server/allow_lan_access/deeper boom"


def test_native_scalar_types_survive(tmp_path: Path) -> None:
    write(tmp_path, {"00.yaml": "a: &flag true\nb: *flag\nc: 1.5\nd: 7\ne: null\nf: [x, {g: h}]\n"})
    data = load_dir(tmp_path, env={}).data
    assert data == {"a": True, "b": True, "c": 1.5, "d": 7, "e": None, "f": ["x", {"g": "h"}]}
    assert type(data["a"]) is bool and type(data["b"]) is bool and type(data["d"]) is int


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${A}", {"A": "1"}, "1"),
    ("x-${A}-${B}", {"A": "1", "B": "2"}, "x-1-2"),
    ("${A:-dflt}", {}, "dflt"),
    ("${A:-dflt}", {"A": ""}, "dflt"),
    ("${A:-dflt}", {"A": "set"}, "set"),
    ("${A:-}", {}, ""),
    ("${A:-http://h:1/p}", {}, "http://h:1/p"),
    ("${A}", {"A": ""}, ""),
    ("no refs $A {A}", {}, "no refs $A {A}"),
], ids=["plain", "two-refs", "default-unset", "default-empty", "default-set", "empty-default",
        "default-with-colons", "set-empty", "no-refs"])
def test_resolve_env(text: str, env: dict[str, str], expected: str) -> None:
    assert resolve_env(text, env) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("${MISSING}", "environment variable MISSING is not set"),
    ("${1BAD}", "bad variable reference ${1BAD}"),
    ("${}", "bad variable reference"),
    ("${file:/nonexistent/secret}", "cannot read ${file:/nonexistent/secret}"),
], ids=["unset", "bad-name", "empty", "missing-file"])
def test_resolve_env_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        resolve_env(text, {})
    assert message in str(info.value)


def test_file_reference_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t\n")
    cfg = write(tmp_path / "cfg", {"00.yaml": f'auth:\n  api_keys: [{{name: a, key: "${{file:{secret}}}"}}]\n'})
    loaded = load_dir(cfg, env={})
    assert loaded.errors == []
    assert loaded.data["auth"]["api_keys"][0]["key"] == "s3cr3t"


def test_unresolved_variable_is_located_and_collected(tmp_path: Path) -> None:
    write(tmp_path, {"00.yaml": "server:\n  host: ${NOPE}\nauth:\n  api_keys:\n    - {name: a, key: '${ALSO_NOPE}'}\n"})
    loaded = load_dir(tmp_path, env={})
    assert [str(e) for e in loaded.errors] == [
        "00.yaml:2:3: at /server/host environment variable NOPE is not set (use ${NOPE:-default})",
        ("00.yaml:5:17: at /auth/api_keys/0/key environment variable ALSO_NOPE is not set "
         "(use ${ALSO_NOPE:-default})"),
    ]


def test_env_defaults_to_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_TEST_HOST", "10.0.0.9")
    write(tmp_path, {"00.yaml": "server: {host: '${ROUTER_TEST_HOST}'}\n"})
    assert load_dir(tmp_path).data["server"]["host"] == "10.0.0.9"


PROVIDER = "    dialect: openai\n    base_url: http://x\n    template: t\n"


@pytest.mark.parametrize(("first", "second", "expected"), [
    ("providers:\n  p:\n" + PROVIDER, "providers:\n  p:\n" + PROVIDER,
     "20-b.yaml:2:3: at /providers/p providers 'p' is already defined in 10-a.yaml:2"),
    ("templates:\n  t: {url: u, body: {}}\n", "templates:\n  t: {url: u, body: {}}\n",
     "20-b.yaml:2:3: at /templates/t templates 't' is already defined in 10-a.yaml:2"),
    ("retry_policies:\n  r: {rules: []}\n", "retry_policies:\n  r: {rules: []}\n",
     "20-b.yaml:2:3: at /retry_policies/r retry_policies 'r' is already defined in 10-a.yaml:2"),
    ("model_mapping:\n  exact: {gpt-4o: p/a}\n", "model_mapping:\n  exact:\n    gpt-4o: p/b\n",
     "20-b.yaml:3:5: at /model_mapping/exact/gpt-4o '/model_mapping/exact/gpt-4o' is already defined in 10-a.yaml:2"),
    ("model_mapping:\n  default: p/a\n", "model_mapping:\n  default: p/b\n",
     "is already defined in 10-a.yaml:2"),
    ("server:\n  port: 1\n", "server:\n  port: 2\n",
     "20-b.yaml:2:3: at /server/port '/server/port' is already defined in 10-a.yaml:2"),
], ids=["provider", "template", "retry-policy", "mapping-exact-key", "mapping-default", "server-field"])
def test_name_defined_in_two_files_names_both(tmp_path: Path, first: str, second: str, expected: str) -> None:
    write(tmp_path, {"10-a.yaml": first, "20-b.yaml": second})
    errors = [str(e) for e in load_dir(tmp_path, env={}).errors]
    assert len(errors) == 1
    assert expected in errors[0]
    assert "10-a.yaml" in errors[0] and "20-b.yaml" in errors[0]


def test_different_names_in_one_section_merge(tmp_path: Path) -> None:
    write(tmp_path, {
        "10-a.yaml": "providers:\n  p:\n" + PROVIDER + "model_mapping:\n  exact: {a: p/a}\n",
        "20-b.yaml": "providers:\n  q:\n" + PROVIDER + "model_mapping:\n  exact: {b: p/b}\n",
    })
    loaded = load_dir(tmp_path, env={})
    assert loaded.errors == []
    assert list(loaded.data["providers"]) == ["p", "q"]
    assert loaded.data["model_mapping"]["exact"] == {"a": "p/a", "b": "p/b"}


def test_an_empty_section_neither_conflicts_nor_adds(tmp_path: Path) -> None:
    write(tmp_path, {
        "10-a.yaml": "providers:\n  # p: commented out\nroutes:\n",
        "20-b.yaml": "providers:\n  p:\n" + PROVIDER + "routes:\n  - {path: /a, handler: health}\n",
        "30-c.yaml": "providers:\nroutes:\n",
    })
    loaded = load_dir(tmp_path, env={})
    assert loaded.errors == []
    assert list(loaded.data["providers"]) == ["p"] and len(loaded.data["routes"]) == 1
    assert loaded.locations[("providers", "p")].file == "20-b.yaml"


def test_same_route_in_two_files_names_both(tmp_path: Path) -> None:
    write(tmp_path, {
        "10-a.yaml": MINIMAL_CONFIG,
        "20-b.yaml": "routes:\n  - {path: /healthz, handler: health}\n"
                     "  - {path: /v1/chat/completions, methods: [GET, POST], handler: openai.chat}\n",
    })
    errors = [str(e) for e in check(tmp_path, template_filters(), env={})]
    assert errors == [("20-b.yaml:3:6: at /routes/2/path route POST /v1/chat/completions is already defined "
                       "in 10-a.yaml:10")]


@pytest.mark.parametrize(("text", "expected"), [
    ("server:\n  port: [1\n", "00.yaml:3:1: YAML syntax error"),
    ("a: 1\n  b: 2\n", "00.yaml:2:4: YAML syntax error"),
    ("a: 1\na: 2\n", "00.yaml:2:1: YAML syntax error"),
    ("key: 'unterminated\n", "00.yaml:2:1: YAML syntax error"),
    ("a:\n\t- b\n", "00.yaml:2:1: YAML syntax error"),
    ("a: 1\nb: !!set\n", "00.yaml:2:4: YAML error: cannot build this value"),
    ("a:\n  b: [1, !!float x]\n", "00.yaml:2:10: YAML error: cannot build this value"),
    ("? - ? \n", "00.yaml:1:3: YAML error: cannot build this value"),  # located at the key itself
    ("---\na: 1\n---\nb: 2\n", "00.yaml:3:1: YAML syntax error"),
    ("- a\n- b\n", "00.yaml:1:1: the top level of a config file must be a mapping"),
    ("just text\n", "00.yaml:1:1: the top level of a config file must be a mapping"),
], ids=["unclosed-flow", "bad-indent", "duplicate-key", "unterminated-quote", "tab", "set-tag-on-scalar",
        "bad-float-tag", "unhashable-key", "two-documents", "list", "scalar"])
def test_yaml_problems_are_located(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path, {"00.yaml": text, "10-ok.yaml": "server: {port: 1}\n"})
    loaded = load_dir(tmp_path, env={})
    assert str(loaded.errors[0]).startswith(expected)
    assert loaded.data == {"server": {"port": 1}}  # the other files are still read


def test_empty_file_and_missing_dir(tmp_path: Path) -> None:
    write(tmp_path / "cfg", {"00.yaml": "# only a comment\n"})
    assert load_dir(tmp_path / "cfg", env={}).data == {}
    missing = load_dir(tmp_path / "nope", env={})
    assert missing.errors and "config directory not found" in str(missing.errors[0])


@pytest.mark.parametrize(("pointer", "text"), [
    ((), ""), (("a", 0, "b"), "/a/0/b"), (("a/b", "c~d"), "/a~1b/c~0d"),
], ids=["root", "nested", "escaped"])
def test_pointer_text(pointer: tuple[str | int, ...], text: str) -> None:
    assert pointer_text(pointer) == text


@pytest.mark.parametrize(("err", "text"), [
    (ConfigError("a.yaml", 3, 5, "/server/port", "bad"), "a.yaml:3:5: at /server/port bad"),
    (ConfigError("a.yaml", 3, 5, "", "bad"), "a.yaml:3:5: bad"),
    (ConfigError("a.yaml", 0, 0, "/x", "bad"), "a.yaml: at /x bad"),
], ids=["full", "no-pointer", "no-line"])
def test_config_error_text(err: ConfigError, text: str) -> None:
    assert str(err) == text


# --- property: arbitrary YAML text never crashes the loader or the compiler --------------------------

_WORDS = ["server", "auth", "providers", "routes", "templates", "retry_policies", "model_mapping",
          "response_headers", "logging", "port", "mode", "strict", "path", "handler", "health", "methods",
          "GET", "/x/{a}", "dialect", "gemini", "base_url", "template", "url", "body", "rules", "on", "429",
          "wait", "1s", "exact", "wildcard", "default", "p/m", "{{ model }}", "{% if %}", "${X}", "${X:-1}",
          "&a", "*a", "<<", "!!set", "!!float", "!!int", "!!bool", "? ", "true", "null", "-1", "1e9", "'", '"']
_PUNCT = [":", " ", "  ", "\n", "- ", "[", "]", "{", "}", ",", "#", "|", ">", "?", "\t", "\r\n", "%"]
_yaml_text = st.lists(st.sampled_from(_WORDS + _PUNCT) | st.text(string.printable, max_size=4),
                      max_size=40).map("".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_yaml_text, min_size=1, max_size=2))
def test_random_yaml_never_crashes(tmp_path: Path, texts: list[str]) -> None:
    for old in tmp_path.glob("*.yaml"):
        old.unlink()
    write(tmp_path, {f"{i}0-f.yaml": t for i, t in enumerate(texts)})
    loaded = load_dir(tmp_path, env={"X": "1"})
    try:
        snap = compile_config(loaded, 1, template_filters())
    except ConfigErrors as e:
        assert e.errors
        for err in e.errors:
            assert isinstance(err, ConfigError) and err.message
            assert err.file.endswith(".yaml") or err.file == str(tmp_path)  # a file, or the dir as a whole
    else:
        assert isinstance(snap, Snapshot)
