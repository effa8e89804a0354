"""The shipped routes.d/: valid with and without real keys, file by file, and through `router check`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from router.registry import template_filters
from router.schema import validator
from router.snapshot import build, check

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ROOT / "routes.d"
FILES = sorted(ROUTES.glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../schemas/config.schema.json"


def test_there_are_shipped_files() -> None:
    assert len(FILES) >= 5


@pytest.mark.parametrize("env", [{}, {"GEMINI_API_KEY": "x"}], ids=["no-keys", "gemini-key"])
def test_shipped_config_validates(env: dict[str, str]) -> None:
    assert [str(e) for e in check(ROUTES, template_filters(), env=env)] == []


def test_without_keys_everything_falls_back_to_the_simulator() -> None:
    snap, _ = build(ROUTES, 1, template_filters(), env={})
    assert any(p.base_url == "builtin:simulator" for p in snap.providers.values())
    assert snap.provider("gemini").name == "simulator"  # type: ignore[union-attr]
    assert snap.auth.mode == "off" and snap.server.port == 8045


def test_a_gemini_key_switches_to_the_real_api() -> None:
    snap, _ = build(ROUTES, 1, template_filters(), env={"GEMINI_API_KEY": "x"})
    gemini = snap.provider("gemini")
    assert gemini is not None and gemini.name == "gemini"
    assert gemini.base_url == "https://generativelanguage.googleapis.com"
    assert [a.api_key for a in gemini.pool.accounts] == ["x"]
    assert snap.mapper.resolve("gpt-4o").provider == "gemini"  # type: ignore[union-attr]


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_each_file_alone_validates_against_the_root_schema(path: Path) -> None:
    doc = YAML(typ="safe").load(path.read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(doc)]
    assert errors == []


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_each_file_starts_with_the_schema_modeline(path: Path) -> None:
    assert path.read_text().splitlines()[0] == MODELINE
    assert (path.parent / "../schemas/config.schema.json").resolve().is_file()


def run_check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "check", str(directory)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_router_check_cli(tmp_path: Path) -> None:
    ok = run_check(ROUTES)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok" in ok.stdout

    broken = tmp_path / "routes.d"
    shutil.copytree(ROUTES, broken)
    mapping = broken / "20-mapping.yaml"
    lines = mapping.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip().startswith("default:"))
    lines[index] = "  default: nowhere/model"
    lines.insert(index, "  bogus: 1")
    mapping.write_text("\n".join(lines) + "\n")
    bad = run_check(broken)
    assert bad.returncode == 1
    assert f"20-mapping.yaml:{index + 1}:3: at /model_mapping/bogus unknown field 'bogus'" in bad.stdout
    # the schema error and the cross-reference error are both reported in one run
    assert f"20-mapping.yaml:{index + 2}:3: at /model_mapping/default mapping target 'nowhere/model'" in bad.stdout
    assert "2 error(s)" in bad.stderr
