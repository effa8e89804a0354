"""Smoke test of the benchmark harness (``bench/run.py``) at tiny scale: real processes on loopback
(simulator, bare proxy, gateway), the aiohttp load generator (never wrk), no LiteLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import drive, report
from bench.config_scale import METRICS
from bench.measure import TINY
from bench.run import run_benchmark

SUMMARY_KEYS = {"rps", "cpu_us_per_req", "added_p50_ms", "added_p99_ms", "ttfb_ms", "per_chunk_us", "peak_rss_mib",
                "rss_growth_pct", "errors"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench-results")
    run_benchmark(TINY, out, litellm=False, workers=0, scale_sizes=(10, 100))
    return orjson.loads((out / "latest.json").read_bytes()), out


def test_writes_the_three_result_files(results: tuple[dict[str, Any], Path]) -> None:
    _, out = results
    assert (out / "latest.json").stat().st_size > 0
    assert "| gateway |" in (out / "latest.md").read_text()
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"  # matplotlib is a test dependency


def test_summaries_have_positive_numbers(results: tuple[dict[str, Any], Path]) -> None:
    data, _ = results
    assert set(data["summaries"]) == {"bare", "gateway"}
    for name, summary in data["summaries"].items():
        assert SUMMARY_KEYS <= set(summary), name
        assert summary["errors"] == 0, (name, data["notes"])
        for key in ("rps", "cpu_us_per_req", "ttfb_ms", "peak_rss_mib"):
            assert summary[key] > 0, (name, key)
    assert data["direct"]["latency_c1"]["rps"] > 0
    assert data["meta"]["upstream_chunks"] > 1


def test_ratios_and_curves(results: tuple[dict[str, Any], Path]) -> None:
    data, _ = results
    ratios = data["ratios"]["gateway/bare"]
    assert set(report.RATIO_KEYS) == set(ratios)
    assert ratios["rps"] > 0 and ratios["peak_rss_mib"] > 0
    assert set(data["curves"]) == {"direct", "bare", "gateway"}
    for points in data["curves"].values():
        assert {str(c) for c in TINY.curve_levels} == set(points)
        assert all(p["rps"] > 0 and p["latency_ms"]["p50"] > 0 for p in points.values())


def test_config_scale_section(results: tuple[dict[str, Any], Path]) -> None:
    scale = results[0]["config_scale"]
    assert scale["small"]["rules"] == 10 and scale["large"]["rules"] == 100
    for label in ("small", "large"):
        assert all(scale[label][k] > 0 for k in METRICS), label


def test_wrk_script_quotes_bodies_safely() -> None:
    target = drive.Target("t", "http://127.0.0.1:1/x", b'{"a":"]=]"}', {"x-key": "v"})
    script = drive.wrk_script(target)
    assert '[==[{"a":"]=]"}]==]' in script  # a level the body cannot close
    assert 'wrk.headers[ [=[x-key]=] ] = [=[v]=]' in script


def test_instructions_reads_the_callgrind_total(tmp_path: Path) -> None:
    from bench.instructions import counted_instructions

    dump = tmp_path / "gateway.callgrind.1"
    dump.write_text("version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfn=(1) main\n0 5\nsummary: 123456789\n")
    assert counted_instructions(dump) == 123456789
    dump.write_text("events: Ir\nsummary: 0\nfn=(1) main\n0 5\ntotals: 279899158\n")  # after --zero
    assert counted_instructions(dump) == 279899158
    (tmp_path / "empty").write_text("events: Ir\n")
    with pytest.raises(RuntimeError, match="no instruction total"):
        counted_instructions(tmp_path / "empty")


def test_instructions_says_what_it_needs_when_valgrind_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from bench import instructions

    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    assert instructions.main([]) == 2
    assert "valgrind" in capsys.readouterr().err
