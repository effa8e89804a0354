"""router.resources and the commands built on it: the packaged default config and `router init DIR`."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import main
from router.registry import template_filters
from router.resources import (
    STARTER_MODELINE,
    default_config_dir,
    default_config_files,
    default_test_files,
    schema_files,
    with_starter_modeline,
)
from router.snapshot import check
from tests.conftest import start_gateway


def test_the_package_carries_the_schemas_and_the_default_config() -> None:
    assert "config.schema.json" in {f.name for f in schema_files()}
    assert {f.name for f in default_config_files()} == {p.name for p in default_config_dir().glob("*.yaml")}
    assert len(default_config_files()) >= 5


def test_init_writes_the_default_config_with_modelines_pointing_at_copied_schemas(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "conf"
    assert main(["init", str(target)]) == 0
    assert sorted(p.name for p in target.glob("*.yaml")) == [f.name for f in default_config_files()]
    assert sorted(p.name for p in (target / "schemas").iterdir()) == [f.name for f in schema_files()]
    for source in default_config_files():
        written = (target / source.name).read_text().splitlines()
        assert written[0] == STARTER_MODELINE
        assert (target / STARTER_MODELINE.split("$schema=")[1]).is_file()
        assert written[1:] == source.read_text().splitlines()[1:]  # only the modeline changed
    cases = sorted(p.name for p in (target / "tests").glob("*.yaml"))
    assert cases == [f.name for f in default_test_files()] and cases  # the shipped cases, beside the config
    modeline = (target / "tests" / cases[0]).read_text().splitlines()[0]
    assert modeline.endswith("$schema=../schemas/config-tests.schema.json")
    assert main(["test", str(target)]) == 0  # they pass on the copy as on routes.d
    out = capsys.readouterr().out
    assert f"wrote {target / '00-server.yaml'}" in out
    assert f"next: router check {target} && router serve --config {target}" in out


async def test_an_initialised_dir_checks_and_serves(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    assert main(["init", str(target)]) == 0
    assert [str(e) for e in check(target, template_filters(), env={})] == []
    h = await start_gateway(target)
    try:
        r = await h.request("GET", "/healthz")
        assert r.status == 200
    finally:
        await h.close()


def test_init_refuses_a_non_empty_dir_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "conf"
    target.mkdir()
    (target / "00-server.yaml").write_text("mine: true\n")
    (target / "70-local.yaml").write_text("also: mine\n")
    assert main(["init", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not empty" in err and "--force" in err
    assert sorted(p.name for p in target.iterdir()) == ["00-server.yaml", "70-local.yaml"]

    assert main(["init", "--force", str(target)]) == 0
    assert (target / "00-server.yaml").read_text().startswith(STARTER_MODELINE)
    assert (target / "70-local.yaml").read_text() == "also: mine\n"  # --force replaces only its own files


def test_init_refuses_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "conf").write_text("")
    assert main(["init", str(tmp_path / "conf")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_init_into_an_empty_dir(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path)]) == 0
    assert (tmp_path / "schemas" / "config.schema.json").is_file()


def test_a_file_without_modeline_gets_one() -> None:
    assert with_starter_modeline("a: 1\n") == STARTER_MODELINE + "\na: 1\n"
    assert with_starter_modeline("# c\n# yaml-language-server: $schema=x\na: 1\n") == \
        "# c\n" + STARTER_MODELINE + "\na: 1\n"


@pytest.fixture
def outside_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROUTER_CONFIG", raising=False)
    return tmp_path


def test_check_outside_a_checkout_uses_the_packaged_default_and_says_so(
        outside_checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{default_config_dir()}: ok (8 file(s))"
    assert err.count("\n") == 1
    assert f"using the packaged default config {default_config_dir()}" in err and "router init DIR" in err


def test_a_routes_d_in_the_cwd_still_wins(outside_checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "routes.d"]) == 0
    capsys.readouterr()
    assert main(["check"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "routes.d: ok (8 file(s))" and err == ""


def test_router_config_env_still_wins(outside_checkout: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "elsewhere"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("ROUTER_CONFIG", "elsewhere")
    assert main(["check"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "elsewhere: ok (8 file(s))" and err == ""
