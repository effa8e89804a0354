"""Smoke test of the benchmark harness (``bench/run.py``) at tiny scale: real processes on loopback
(simulator, bare proxy, gateway, and the ``state:redis`` gateway with a redis-server when one is
installed, as in CI), the aiohttp load generator (never wrk), no LiteLLM."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench import drive, procs, report, run
from bench.config_scale import METRICS
from bench.measure import TINY
from bench.run import run_benchmark

HAVE_REDIS = shutil.which("redis-server") is not None
GATEWAYS = ({"gateway", "gateway state:redis", "gateway +key", "gateway +key state:redis"} if HAVE_REDIS
            else {"gateway", "gateway +key"})
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
    assert "## State backend: redis against memory" in (out / "latest.md").read_text()
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"  # matplotlib is a test dependency


def test_summaries_have_positive_numbers(results: tuple[dict[str, Any], Path]) -> None:
    data, _ = results
    assert set(data["summaries"]) == {"bare", *GATEWAYS}
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
    assert set(data["curves"]) == {"direct", "bare", *GATEWAYS}
    for points in data["curves"].values():
        assert {str(c) for c in TINY.curve_levels} == set(points)
        assert all(p["rps"] > 0 and p["latency_ms"]["p50"] > 0 for p in points.values())


def test_state_redis_row_against_memory(results: tuple[dict[str, Any], Path]) -> None:
    data, out = results
    state = data["state_backend"]
    assert state["target"] == {"min_rps_ratio": 0.95, "max_added_p50_ms": 0.2}
    if not HAVE_REDIS:
        assert state["rows"] == {} and state["redis_server"] is None
        assert any(n.startswith("state:redis rows not measured: redis-server is not installed") for n in data["notes"])
        return
    row = state["rows"]["gateway state:redis"]
    assert row["against"] == "gateway" and row["rps"] > 0 and row["cpu_us_per_req"] > 0
    assert row["cpu_us_per_req_all"] > 0
    assert isinstance(row["added_p50_delta_ms"], float) and isinstance(row["target_met"], bool)
    assert state["redis_server"]["commands"] > 0  # the redis gateway's sync loop reached it
    assert "| gateway state:redis | gateway |" in (out / "latest.md").read_text()


def test_state_rows_judge_the_target() -> None:
    summaries: dict[str, dict[str, Any]] = {
        "gateway": {"rps": 1000.0, "cpu_us_per_req": 300.0, "added_p50_ms": 0.5},
        "gateway state:redis": {"rps": 960.0, "cpu_us_per_req": 310.0, "added_p50_ms": 0.65},
        "gateway --workers 2": {"rps": 1500.0, "cpu_us_per_req": 320.0, "round_rps": [1500.0, 1600.0, 1400.0]},
        "gateway --workers 2 state:redis": {"rps": 1400.0, "cpu_us_per_req": 330.0,
                                            "round_rps": [1200.0, 1488.0, 1400.0]},  # one slow round
    }
    rows = report.state_backend(summaries, None)["rows"]
    assert rows["gateway state:redis"]["rps"] == pytest.approx(0.96)
    assert rows["gateway --workers 2 state:redis"]["rps_rounds"] == pytest.approx([0.8, 0.93, 1.0])
    assert rows["gateway --workers 2 state:redis"]["rps_paired"] == pytest.approx(0.93)  # the median pair
    assert rows["gateway state:redis"]["added_p50_delta_ms"] == pytest.approx(0.15)
    assert rows["gateway state:redis"]["target_met"] is True
    assert rows["gateway --workers 2 state:redis"]["target_met"] is False  # 0.93x throughput, the median pair
    summaries["gateway --workers 2 state:redis"]["round_rps"] = [1200.0, 1584.0, 1400.0]  # 0.8, 0.99, 1.0
    assert report.state_backend(summaries, None)["rows"]["gateway --workers 2 state:redis"]["target_met"] is True
    summaries["gateway --workers 2 state:redis"]["round_rps"] = [1200.0, 1488.0, 1400.0]
    assert "added_p50_delta_ms" not in rows["gateway --workers 2 state:redis"]
    summaries["gateway state:redis"]["added_p50_ms"] = 0.75  # 0.25 ms above memory
    assert report.state_backend(summaries, None)["rows"]["gateway state:redis"]["target_met"] is False
    table = report.state_table(report.state_backend(summaries, None))
    assert "| gateway --workers 2 state:redis | gateway --workers 2 | 0.93× | 0.80 / 0.93 / 1.00 |" in table
    assert "**not met**" in table


def test_client_key_rows_against_auth_off(results: tuple[dict[str, Any], Path]) -> None:
    data, out = results
    keys = data["client_keys"]
    assert keys["target"] == {"min_rps_ratio": 0.95}
    row = keys["rows"]["gateway +key"]
    assert row["against"] == "gateway" and row["rps"] > 0 and isinstance(row["target_met"], bool)
    assert "## Client keys: a key with limits against auth off" in (out / "latest.md").read_text()
    assert "| gateway +key | gateway |" in (out / "latest.md").read_text()
    if HAVE_REDIS:
        shared = keys["rows"]["gateway +key state:redis"]
        assert shared["against"] == "gateway state:redis" and shared["target_met"] is None  # shown, not judged
        assert data["state_backend"]["rows"]["gateway +key state:redis"]["against"] == "gateway +key"


def test_client_key_rows_judge_the_memory_target() -> None:
    summaries: dict[str, dict[str, Any]] = {
        "gateway": {"rps": 1000.0, "cpu_us_per_req": 300.0, "round_rps": [1000.0, 1000.0, 1000.0]},
        "gateway +key": {"rps": 960.0, "cpu_us_per_req": 310.0, "round_rps": [900.0, 960.0, 970.0]},
        "gateway state:redis": {"rps": 900.0, "cpu_us_per_req": 330.0},
        "gateway +key state:redis": {"rps": 800.0, "cpu_us_per_req": 340.0},
    }
    rows = report.client_keys(summaries)["rows"]
    assert set(rows) == {"gateway +key", "gateway +key state:redis"}
    assert rows["gateway +key"]["rps_paired"] == pytest.approx(0.96) and rows["gateway +key"]["target_met"] is True
    assert rows["gateway +key state:redis"]["rps"] == pytest.approx(800 / 900)
    summaries["gateway +key"]["round_rps"] = [900.0, 940.0, 970.0]  # the median pair: 0.94x
    assert report.client_keys(summaries)["rows"]["gateway +key"]["target_met"] is False
    assert "**not met**" in report.keys_table(report.client_keys(summaries))
    assert procs.client_headers("gateway +key state:redis") == {"Authorization": f"Bearer {procs.CLIENT_KEY}"}
    assert procs.client_headers("gateway state:redis") == {}


def test_a_missing_redis_server_is_a_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(procs.shutil, "which", lambda name: None)
    notes: list[str] = []
    assert run._start_redis(tmp_path, notes) is None
    assert notes == ["state:redis rows not measured: redis-server is not installed (apt-get install redis-server)"]
    assert "Not measured in this run" in report.state_table(report.state_backend({"gateway": {"rps": 1.0}}, None))


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


def test_instructions_table_compares_the_backends() -> None:
    from bench.instructions import RATIO_COLUMNS, _ratios, _table

    results = {"gateway": {"requests": 800, "per_request": 950_000.0, "per_request_without_gc": 900_000.0},
               "gateway state:redis": {"requests": 700, "per_request": 1_000_000.0, "per_request_without_gc": 909_000.0,
                                       "redis_commands_per_request": 0.03},
               "bare": {"requests": 1000, "per_request": 650_000.0, "per_request_without_gc": 600_000.0}}
    ratios = {key: _ratios(results, key) for key in RATIO_COLUMNS}
    assert ratios["per_request"]["gateway state:redis/gateway"] == pytest.approx(1_000_000 / 950_000)
    table = _table(results, ratios)
    assert "| gateway state:redis | 700 | 1,000,000 | 909,000 | 0.030 |" in table
    assert "| **gateway state:redis/gateway** |  | 1.053× | 1.010× |  |" in table
    assert "| **gateway/bare** |  | 1.46× | 1.50× |  |" in table


def test_instructions_table_compares_a_key_with_auth_off() -> None:
    from bench.instructions import RATIO_COLUMNS, _ratios, _table

    results = {"gateway": {"requests": 800, "per_request": 950_000.0},
               "gateway +key": {"requests": 800, "per_request": 997_500.0},
               "gateway state:redis": {"requests": 700, "per_request": 1_000_000.0},
               "gateway +key state:redis": {"requests": 700, "per_request": 1_080_000.0},
               "bare": {"requests": 1000, "per_request": 650_000.0}}
    ratios = {key: _ratios(results, key) for key in RATIO_COLUMNS}
    assert ratios["per_request_without_gc"] == {}
    assert ratios["per_request"]["gateway +key/gateway"] == pytest.approx(1.05)
    assert ratios["per_request"]["gateway +key state:redis/gateway state:redis"] == pytest.approx(1.08)
    assert ratios["per_request"]["gateway +key state:redis/gateway +key"] == pytest.approx(1_080_000 / 997_500)
    assert ratios["per_request"]["gateway state:redis/gateway"] == pytest.approx(1_000_000 / 950_000)
    assert "| **gateway +key/gateway** |  | 1.050× |" in _table(results, ratios)
