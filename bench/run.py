"""One command for the whole benchmark: gateway vs the bare reference proxy (vs LiteLLM).

    python bench/run.py [--quick] [--litellm] [--workers 2] [--no-redis] [--out bench/results]

Starts on 127.0.0.1 the simulator (200-chunk streams) and, side by side, the bare proxy, the
gateway, the gateway serving a client key with limits (``+key``), the gateway with ``--workers N``
(throughput only), each gateway again with ``state:
{backend: redis}`` at a redis-server of its own (unless ``--no-redis``; skipped with a note when
redis-server is missing) and, with ``--litellm``, a LiteLLM proxy from its own virtualenv; then
drives load at each, phase by phase and interleaved (see ``bench/measure.py``), from a separate
process (wrk if installed, else ``bench/load.py``). Writes ``latest.json``, ``latest.md`` and
``latency.png`` to ``--out`` and prints the tables. The config-scale benchmark
(``bench/config_scale.py``) is part of the report.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` and ``router`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import config_scale, drive, measure, procs, report
from bench.litellm_peer import LiteLLMUnavailable, start_litellm
from bench.litellm_peer import version as litellm_version
from bench.measure import FULL, QUICK, Scale

STREAM_CHUNKS = 200
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
LOG_MARKERS = ("Traceback", " ERROR ", " WARNING ", '"level": "error"', '"level": "warning"')


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _load_tool(scale: Scale) -> str:
    wrk = drive.wrk_path() if scale.use_wrk else None
    if wrk is None:
        return "bench/load.py (aiohttp)"
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    version = " ".join((out.stdout or out.stderr or "wrk").split()[:2])  # "wrk debian/4.1.0-3"
    return f"{version} for duration-bounded runs, bench/load.py for count-bounded runs and streams"


def log_problems(server: procs.Server, limit: int = 3) -> str | None:
    """A note naming warning/error lines in a server's log (their count and the first few)."""
    try:
        lines = server.log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    bad = [ln for ln in lines if any(m in ln for m in LOG_MARKERS)]
    if not bad:
        return None
    shown = "; ".join(ln.strip()[:200] for ln in bad[:limit])
    return f"{server.name} log has {len(bad)} warning/error line(s), e.g.: {shown}"


def _start(name: str, starter: Callable[[], procs.Server], notes: list[str]) -> procs.Server | None:
    _say(f"{name}: starting")
    try:
        server = starter()
    except (RuntimeError, LiteLLMUnavailable) as exc:
        notes.append(f"{name}: not measured: {exc}")
        _say(notes[-1])
        return None
    _say(f"{name}: ready at {server.url} (pid {server.proc.pid})")
    return server


def _start_redis(work: Path, notes: list[str]) -> procs.Server | None:
    """The redis-server of the ``state:redis`` rows; when it cannot run, a note says why they are missing."""
    if importlib.util.find_spec("redis") is None:
        notes.append("state:redis rows not measured: redis-py is not installed (pip install 'router[redis]')")
        _say(notes[-1])
        return None
    server = _start("redis-server", lambda: procs.start_redis(work), notes)
    if server is None:
        notes[-1] = notes[-1].replace("redis-server: not measured", "state:redis rows not measured")
    return server


def _start_proxies(work: Path, sim: procs.Server, litellm: bool, workers: int, redis: procs.Server | None,
                   notes: list[str], servers: list[procs.Server]) -> None:
    """Start every proxy side by side, appending each to ``servers`` as soon as it runs (so the
    caller stops it whatever happens next); one that cannot start becomes a note. A ``state:redis``
    gateway comes right after its memory twin (interleaved phases measure them back to back); each
    uses a database of its own on ``redis``, so the two share nothing with each other."""
    config = procs.gateway_config(work)
    redis_config = procs.gateway_config(work, redis={})  # the shipped timeouts

    def gateway(n: int, keys: bool = False) -> list[tuple[str, Callable[[], procs.Server]]]:
        """The gateway with ``n`` workers and, with a redis-server, its state:redis twin; ``keys``: the
        twins whose requests carry a client key with limits (``bench/config_keys``)."""
        name = ("gateway" if n == 1 else f"gateway --workers {n}") + (procs.KEY_SUFFIX if keys else "")
        plain = procs.gateway_config(work, keys=True) if keys else config
        pair: list[tuple[str, Callable[[], procs.Server]]] = [
            (name, lambda: procs.start_gateway(work, plain, sim.url, n, keys=keys))]
        if redis is not None:
            url = procs.redis_url(redis, db=n + (8 if keys else 0))
            shared = procs.gateway_config(work, redis={}, keys=True) if keys else redis_config
            pair.append((name + procs.REDIS_SUFFIX,
                         lambda: procs.start_gateway(work, shared, sim.url, n, redis_url=url, keys=keys)))
        return pair

    starters = [("bare", lambda: procs.start_bare(work, sim.url)), *gateway(1), *gateway(1, keys=True),
                *(gateway(workers) if workers > 1 else [])]
    if litellm:
        starters.append(("litellm", lambda: start_litellm(work, sim.url)))
    for name, starter in starters:
        server = _start(name, starter, notes)
        if server is not None:
            servers.append(server)


def run_benchmark(scale: Scale, out_dir: Path, *, litellm: bool = False, workers: int = 2, redis: bool = True,
                  scale_sizes: tuple[int, int] | None = (20, 2_000), keep_work: bool = False) -> dict[str, Any]:
    """Run every measurement, write the result files, and return the results."""
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    notes: list[str] = []
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    servers: list[procs.Server] = []
    redis_server: procs.Server | None = None
    redis_stats: dict[str, Any] | None = None
    try:
        with procs.start_simulator(work, STREAM_CHUNKS) as sim:
            redis_server = _start_redis(work, notes) if redis else None
            _start_proxies(work, sim, litellm, workers, redis_server, notes, servers)
            subjects = [measure.proxy_subject(s, full="--workers" not in s.name, headers=procs.client_headers(s.name))
                        for s in servers]
            with drive.Driver(scale.use_wrk) as driver:
                direct = measure.measure_all(sim, subjects, scale, driver, _say)
            redis_stats = procs.redis_stats(redis_server) if redis_server is not None else None
    finally:
        for server in servers:
            server.stop()
            problem = log_problems(server)
            if problem:
                notes.append(problem)
        if redis_server is not None:  # its log warns about the host's kernel settings, not about the run
            redis_server.stop()
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    targets = {s.name: s.result for s in subjects}
    if "litellm" in targets:
        targets["litellm"]["version"] = litellm_version()
    scale_results = None
    if scale_sizes is not None:
        _say("config scale: generating and timing configs")
        scale_results = config_scale.run(quick=scale.name != "full", sizes=scale_sizes)
    results = assemble(scale, direct.result, targets, notes, scale_results)
    if redis:
        results["state_backend"] = report.state_backend(results["summaries"], redis_stats)
    results["client_keys"] = report.client_keys(results["summaries"])
    results["meta"].update(elapsed_s=time.monotonic() - started, load_average_before=load_before)
    if load_before > (os.cpu_count() or 1) * 0.5:  # before the run: someone else's load, not ours
        notes.append(f"other processes were busy (1-min load average {load_before:.1f} before the run, on "
                     f"{os.cpu_count()} CPUs): absolute numbers are noisy; ratios and CPU µs/req are steadier "
                     "because the targets are measured interleaved")
    if keep_work:
        results["meta"]["work_dir"] = str(work)
    report.write(results, out_dir)
    return results


def assemble(scale: Scale, direct: dict[str, Any], targets: dict[str, Any], notes: list[str],
             scale_results: dict[str, Any] | None) -> dict[str, Any]:
    summaries = {name: measure.summarise(result) for name, result in targets.items()}
    curves = {"direct": direct["curve"], **{n: r["curve"] for n, r in targets.items() if "curve" in r}}
    chunks = direct["stream"]["events"]
    if chunks < STREAM_CHUNKS:
        notes.append(f"the simulator was started with --chunks {STREAM_CHUNKS} but split its reply into "
                     f"{chunks:g} chunks (it cannot split a reply finer than one character); per-chunk "
                     "overhead divides by the real count")
    meta = {
        "mode": scale.name, "timestamp": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_tool": _load_tool(scale), "scale": asdict(scale),
        "stream_chunks_requested": STREAM_CHUNKS, "upstream_chunks": chunks,
        "memory_requests": [scale.memory_first, scale.memory_total], "memory_concurrency": scale.memory_concurrency,
    }
    return {"meta": meta, "summaries": summaries, "ratios": report.ratios(summaries), "curves": curves,
            "direct": direct, "targets": targets, "config_scale": scale_results, "notes": notes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gateway vs bare proxy (vs LiteLLM) benchmark")
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run (< 30 s)")
    parser.add_argument("--litellm", action="store_true", help="also measure a LiteLLM proxy (pip-installed)")
    parser.add_argument("--workers", type=int, default=2, help="also measure `router serve --workers N` (<2: skip)")
    parser.add_argument("--no-redis", action="store_true", help="skip the `state: redis` gateway rows")
    parser.add_argument("--no-config-scale", action="store_true", help="skip the config-scale benchmark")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp dir with configs and server logs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    results = run_benchmark(QUICK if args.quick else FULL, args.out, litellm=args.litellm, workers=args.workers,
                            redis=not args.no_redis,
                            scale_sizes=None if args.no_config_scale else (20, 2_000), keep_work=args.keep_work)
    print(report.markdown(results))
    print(f"wrote {args.out}/latest.json, latest.md, latency.png in {results['meta']['elapsed_s']:.0f}s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
