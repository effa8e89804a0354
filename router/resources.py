"""The package's own data: the JSON Schemas and the default config, found through importlib.resources.

Both travel inside the installed package (``router/schemas``, ``router/routes.d``), so a wheel
install validates and serves exactly like a checkout, where the root ``schemas/`` and ``routes.d/``
are links to the same files.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

ROOT_SCHEMA = "config.schema.json"
TESTS_SCHEMA = "config-tests.schema.json"  # router test's cases (routes.d/tests/*.yaml)
# The modeline each starter config file gets; relative to the file, so the copied schemas are used.
STARTER_MODELINE = f"# yaml-language-server: $schema=schemas/{ROOT_SCHEMA}"
MODELINE_PREFIX = "# yaml-language-server:"


def schema_files() -> list[Traversable]:
    """The section schemas and the root ``config.schema.json``, by name."""
    found = files("router") / "schemas"
    return sorted((f for f in found.iterdir() if f.name.endswith(".schema.json")), key=lambda f: f.name)


def default_config_files() -> list[Traversable]:
    """The shipped default config (the simulator-backed one), in merge order."""
    found = files("router") / "routes.d"
    return sorted((f for f in found.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)


def default_test_files() -> list[Traversable]:
    """The shipped config's own test cases (``router test``), in ``routes.d/tests``."""
    found = files("router") / "routes.d" / "tests"
    return sorted((f for f in found.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)


def default_config_dir() -> Path:
    """The shipped default config as a directory on disk (the gateway watches and re-reads it)."""
    found = files("router") / "routes.d"
    if not isinstance(found, Path):  # e.g. imported from a zip: there is no directory to watch
        raise RuntimeError(f"the packaged default config is not a directory on disk ({found}); "
                           "use `router init DIR` and --config DIR")
    return found


def with_tests_modeline(text: str) -> str:
    """A test-cases file's modeline pointing at the copied ``schemas/`` one level up."""
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith(MODELINE_PREFIX):
        lines[0] = f"{MODELINE_PREFIX} $schema=../schemas/{TESTS_SCHEMA}\n"
    return "".join(lines)


def with_starter_modeline(text: str) -> str:
    """``text`` with its schema modeline pointing at ``schemas/`` beside it (added when missing)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(MODELINE_PREFIX):
            lines[i] = STARTER_MODELINE + "\n"
            return "".join(lines)
    return STARTER_MODELINE + "\n" + text


def write_starter_config(target: Path) -> list[Path]:
    """Copy the default config into ``target`` with the schemas its modelines point at, and its test
    cases into ``target/tests``; the paths written.

    Files of the same name are replaced; anything else in ``target`` is left alone.
    """
    schema_dir = target / "schemas"
    schema_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for source in default_config_files():
        out = target / source.name
        out.write_text(with_starter_modeline(source.read_text(encoding="utf-8")), encoding="utf-8")
        written.append(out)
    for source in schema_files():
        out = schema_dir / source.name
        out.write_bytes(source.read_bytes())
        written.append(out)
    tests_dir = target / "tests"  # the cases `router test` runs, beside the config they test
    for source in default_test_files():
        tests_dir.mkdir(exist_ok=True)
        out = tests_dir / source.name
        out.write_text(with_tests_modeline(source.read_text(encoding="utf-8")), encoding="utf-8")
        written.append(out)
    return written
