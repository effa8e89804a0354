"""An installed wheel behaves like the checkout: package data, `router check`, `router init`, `router serve`.

The wheel is built from a copy of this checkout with the setuptools already installed (no build
isolation, no index: no network), installed with no index into a fresh venv that borrows the
already-installed dependencies, and its `router` command is run from a directory outside the checkout.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "declarative_llm_router"  # the wheel's file-name form of the distribution name
BUILD_INPUTS = ["pyproject.toml", "README.md", "LICENSE"]
COMMAND_TIMEOUT = 60  # seconds, for each build, install or `router` command
SERVE_TIMEOUT = 30  # seconds until /healthz answers, and again until SIGTERM has ended the process


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    work: Path  # an empty cwd outside the checkout
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def router(self) -> Path:
        return self.venv / "bin" / "router"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.router), *args], cwd=self.work, env=self.env, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT, check=False)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                          check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"


def _clean_env() -> dict[str, str]:
    """This environment without anything that would pick a config, a checkout or real provider keys."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "ROUTER_CONFIG", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items()
           if k not in dropped and not k.endswith(("_API_KEY", "_API_KEYS", "_BASE_URL"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """A wheel of this checkout, built from a copy (no build/ or egg-info left in the checkout)."""
    setuptools = importlib.metadata.version("setuptools")
    assert int(setuptools.split(".")[0]) >= 77, (
        f"setuptools {setuptools} cannot build this project offline; run python -m pip install -e '.[test]'")
    src, dist = tmp / "src", tmp / "dist"
    src.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "router", src / "router", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(dist), str(src)], cwd=tmp, env=env)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    env = _clean_env()
    wheel = _build_wheel(tmp, env)
    venv = tmp / "venv"
    # --system-site-packages: the dependencies come from this interpreter's installed ones, not an index
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp, env=env)
    # --ignore-installed: this interpreter's own (editable) install of the project must not count
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
          str(wheel)], cwd=tmp, env=env)
    work = tmp / "work"
    work.mkdir()
    return Installed(wheel, venv, work, env)


def test_the_wheel_carries_the_schemas_the_default_config_and_py_typed(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for kind in ("schemas", "routes.d", "routes.d/tests"):
        shipped = {f"router/{kind}/{p.name}" for p in (ROOT / "router" / kind).iterdir() if p.is_file()}
        assert shipped and shipped <= names, shipped - names
    assert "router/py.typed" in names
    assert installed.wheel.name.startswith(f"{DISTRIBUTION}-")
    metadata = zipfile.ZipFile(installed.wheel).read(f"{DISTRIBUTION}-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert f"{DISTRIBUTION}-0.1.0.dist-info/licenses/LICENSE" in names
    readme = (ROOT / "README.md").read_text()  # the README's line: the wheel's name matches its pattern
    pattern = re.search(r"pip install (dist/declarative_llm_router-\S+\.whl)", readme)
    assert pattern and fnmatch.fnmatch(f"dist/{installed.wheel.name}", pattern[1]), pattern


def test_the_wheel_carries_the_compiled_speedups(installed: Installed) -> None:
    """Built with the C compiler CI has (the extension is optional where there is none)."""
    names = zipfile.ZipFile(installed.wheel).namelist()
    if not any(n.startswith("router/_speedups") for n in names) and os.environ.get("CI") != "true":
        pytest.skip("no C compiler here: the wheel is the pure-Python one")
    assert any(n.startswith("router/_speedups.") and n.endswith((".so", ".pyd")) for n in names), names
    code = "from router import limit_cells; print(limit_cells.CELLS.__name__)"
    done = subprocess.run([str(installed.python), "-c", code], cwd=installed.work, env=installed.env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=True)
    assert done.stdout.strip() == "router._speedups"


def test_router_is_imported_from_the_venv_not_the_checkout(installed: Installed) -> None:
    done = subprocess.run([str(installed.python), "-c", "import router; print(router.__file__)"],
                          cwd=installed.work, env=installed.env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, check=True)
    where = Path(done.stdout.strip()).resolve()
    assert where.is_relative_to(installed.venv.resolve()), where
    assert not where.is_relative_to(ROOT), where


def test_check_reports_schema_errors_with_file_and_line(installed: Installed) -> None:
    config = installed.work / "broken"
    config.mkdir()
    (config / "10-providers.yaml").write_text("""\
providers:
  p:
    dialect: openai
    base_url: http://up.example
    template: t
    scheduling: roundrobin
    accounts: [{email: a@x, api_key: k}]
templates:
  t: {url: "{{ provider.base_url }}/v1/chat", body: {model: "{{ model }}"}}
routes:
  - {path: /v1/chat/completions, methods: [POST], handler: openai.chat}
""")
    (config / "40-retry.yaml").write_text("retry_policies:\n  default:\n    max_attempts: three\n")
    done = installed.run("check", str(config))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out
    assert re.search(r"^10-providers\.yaml:6:\d+: .*scheduling.*roundrobin", done.stdout, re.MULTILINE), out
    assert re.search(r"^40-retry\.yaml:3:\d+: .*max_attempts.*three", done.stdout, re.MULTILINE), out


def test_check_without_a_dir_validates_the_packaged_default(installed: Installed) -> None:
    done = installed.run("check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "packaged default config" in done.stderr and "router init DIR" in done.stderr
    assert str(installed.venv) in done.stderr  # names the dir it uses


def test_init_writes_a_config_that_checks(installed: Installed) -> None:
    done = installed.run("init", "d")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "next: router check d && router serve --config d" in done.stdout
    checked = installed.run("check", "d")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "d: ok (8 file(s))" and checked.stderr == ""
    again = installed.run("init", "d")
    assert again.returncode == 1 and "not empty" in again.stderr and "--force" in again.stderr


def _healthz(port: int, deadline: float, proc: subprocess.Popen[bytes]) -> int | None:
    """The status of GET /healthz once the server answers; None when it exits or the deadline passes."""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            time.sleep(0.1)
    return None


def test_serve_without_config_serves_the_packaged_default(installed: Installed) -> None:
    port = free_port()
    log = installed.work / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(installed.router), "serve", "--port", str(port)], cwd=installed.work,
                                env=installed.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            status = _healthz(port, time.monotonic() + SERVE_TIMEOUT, proc)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=SERVE_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    output = log.read_text()
    assert status == 200, output
    assert code == 0, output
    assert "packaged default config" in output and str(installed.venv) in output, output
    assert "Traceback" not in output, output
