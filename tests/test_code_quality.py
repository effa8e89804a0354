"""router/ passes ruff and ``mypy --strict`` (configured in pyproject.toml) and keeps its size limits.

The style guide asks for both linters in CI; CI runs ``python -m pytest -q``, so they run here. An
exception to them is one line's and says why: ``# type: ignore[code]  # why``, ``# noqa: CODE - why``,
never a whole file's. The layout limits are the refactor's bar for readable code: no function over
50 lines, no module over 400, no block that radon ranks E or F (cyclomatic complexity over 30).
Each failure lists every offender, so one run shows all there is to fix.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
import tomllib
from pathlib import Path

from radon.complexity import cc_rank, cc_visit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "router"
MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 400
BAD_RANKS = ("E", "F")
RUFF_RULE_SETS = {"E", "F", "W", "B", "SIM", "UP", "I", "PERF"}
# a suppression names its codes, then gives its reason: any text after them (see the module docstring)
TYPE_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]+\])?(?P<why>.*)")
NOQA = re.compile(r"#\s*noqa(?P<codes>:\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?(?P<why>.*)", re.IGNORECASE)
FILE_WIDE = re.compile(r"#\s*(?:ruff|flake8)\s*:\s*noqa|#\s*mypy\s*:|#\s*pyright\s*:", re.IGNORECASE)
TOOL_TIMEOUT = 300  # seconds; a cold mypy run over router/ takes a few seconds


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT, check=False)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_ruff_passes() -> None:
    result = _run("ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), "router")
    assert result.returncode == 0, f"ruff findings:\n{result.stdout}{result.stderr}"


def test_mypy_strict_passes(tmp_path: Path) -> None:
    # a fresh cache per run: nothing written into the checkout, nothing stale read from it
    result = _run("mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path), "router")
    assert result.returncode == 0, f"mypy --strict findings:\n{result.stdout}{result.stderr}"


def _long_functions(path: Path) -> list[str]:
    """Every function or method (nested ones too) longer than the limit, from ``def`` to its last line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{_name(path)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_over_50_lines() -> None:
    offenders = [line for path in _modules() for line in _long_functions(path)]
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_no_module_over_400_lines() -> None:
    sizes = ((path, len(path.read_text(encoding="utf-8").splitlines())) for path in _modules())
    offenders = [f"{_name(path)}: {lines} lines" for path, lines in sizes if lines > MAX_MODULE_LINES]
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_no_block_ranked_e_or_f() -> None:
    """The blocks ``radon cc -n E router`` would list: functions, classes and methods."""
    offenders = [
        f"{_name(path)}:{block.lineno} {block.fullname}: {cc_rank(block.complexity)} ({block.complexity})"
        for path in _modules()
        for block in cc_visit(path.read_text(encoding="utf-8"))
        if cc_rank(block.complexity) in BAD_RANKS
    ]
    assert not offenders, "blocks radon ranks E or F:\n" + "\n".join(offenders)


def _comments(path: Path) -> list[tuple[int, str]]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return [(token.start[0], token.string) for token in tokens if token.type == tokenize.COMMENT]


def _bad_suppression(comment: str) -> str | None:
    """Why a suppression comment breaks the rule, or None when it keeps it (or is no suppression)."""
    if FILE_WIDE.search(comment):
        return "a file-wide suppression"
    ignore = TYPE_IGNORE.search(comment)
    if ignore is not None and not (ignore["codes"] and re.match(r"\s*#\s*\S", ignore["why"])):
        return "a type: ignore needs [codes] and a '# why' after them"
    noqa = NOQA.search(comment)
    if noqa is not None and not (noqa["codes"] and noqa["why"].strip(" -:#")):
        return "a noqa needs its codes and a reason after them"
    return None


def test_every_suppression_is_per_line_and_says_why() -> None:
    offenders = [
        f"{_name(path)}:{line}: {problem}: {comment}"
        for path in _modules()
        for line, comment in _comments(path)
        if (problem := _bad_suppression(comment)) is not None
    ]
    assert not offenders, "suppressions without codes or a reason:\n" + "\n".join(offenders)


def test_the_linters_are_configured_without_blanket_exceptions() -> None:
    """The checks above pass because the code does, not because pyproject.toml switched something off."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    ruff, mypy = tool["ruff"], tool["mypy"]
    assert ruff["line-length"] == 120
    assert set(ruff["lint"]["select"]) >= RUFF_RULE_SETS
    loosened = {"ignore", "extend-ignore", "per-file-ignores", "exclude", "extend-exclude"}
    assert not loosened & (set(ruff) | set(ruff["lint"]))
    assert mypy["strict"] is True
    # an override may only excuse a third-party package that ships no type hints
    assert all(set(override) <= {"module", "ignore_missing_imports"} for override in mypy.get("overrides", []))
