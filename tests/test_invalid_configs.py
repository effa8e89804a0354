"""Every broken config under tests/invalid/ fails with the located messages its expected.txt lists.

Each case is a small config dir (a valid ``10-base.yaml`` plus one or more broken files) and an
``expected.txt``: one substring per line that must appear in the error output. Lines that start with
``file:line:col:`` are locations; there must be exactly one error per location line, so a case also
proves that every problem is reported and nothing else is.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.config import load_dir
from router.errors import ConfigErrors
from router.registry import template_filters
from router.snapshot import check, compile_config

INVALID = Path(__file__).resolve().parent / "invalid"
CASES = sorted(p for p in INVALID.iterdir() if p.is_dir())
_LOCATION = re.compile(r"\A[\w.-]+\.yaml:\d+:\d+:")


def _expected(case: Path) -> list[str]:
    return [line for line in (case / "expected.txt").read_text().splitlines() if line.strip()]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20
    for case in CASES:
        assert list(case.glob("*.yaml")) and (case / "expected.txt").is_file(), case.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invalid_config_fails_with_expected_messages(case: Path) -> None:
    errors = check(case, template_filters(), env={})
    output = "\n".join(str(e) for e in errors)
    expected = _expected(case)
    assert errors, f"{case.name} should not validate"
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from:\n{output}"
    assert len(errors) == sum(bool(_LOCATION.match(line)) for line in expected), output
    for e in errors:
        assert e.line > 0 and e.column > 0, str(e)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_compile_config_raises_the_same_errors(case: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        compile_config(load_dir(case, env={}), 1, template_filters())
    assert [str(e) for e in info.value.errors] == [str(e) for e in check(case, template_filters(), env={})]


def test_base_of_the_cases_is_valid(tmp_path: Path) -> None:
    (tmp_path / "10-base.yaml").write_text((INVALID / "unknown-field" / "10-base.yaml").read_text())
    assert check(tmp_path, template_filters(), env={}) == []
