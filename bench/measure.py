"""The measurements, one function per phase, and the sequence that runs them over every target.

All proxies run side by side (an idle one costs nothing) and are measured phase by phase,
interleaved, so a burst of unrelated load on the machine hits every target alike instead of
skewing one of them:

1. memory growth, each proxy in turn while still fresh (so "request 5,000" counts from its start);
2. the latency-vs-concurrency curve, level by level, the simulator called directly included;
3. throughput at 32 connections, in ``rounds`` alternating slices;
4. latency at concurrency 1 in ``latency_rounds``, each proxy slice next to a slice of the simulator called
   directly (``direct``): "added latency" is the median over rounds of proxy minus direct;
5. 200-chunk streams in rounds, likewise against direct; then each proxy's peak RSS.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import orjson

from bench.drive import Driver, Target
from bench.procs import Server, cpu_seconds, peak_rss_bytes, rss_bytes

MIB = 1024 * 1024
SYSTEM = "You are a helpful assistant answering benchmark traffic."
PROMPT = "Hello! Please give me a short friendly answer about proxies."


@dataclass(frozen=True, slots=True)
class Scale:
    """How much load each phase sends; FULL for the report, QUICK and TINY for smoke runs."""

    name: str
    warmup_s: float
    throughput_s: float
    throughput_concurrency: int
    latency_s: float
    curve_levels: tuple[int, ...]
    curve_s: float
    streams: int
    memory_first: int
    memory_total: int
    memory_concurrency: int
    use_wrk: bool
    rounds: int  # throughput and stream phases are split into this many interleaved slices
    latency_rounds: int  # the same for latency at concurrency 1 (more, shorter: p99 is jittery)


# throughput_s / latency_s of 0: reuse the curve's point at that concurrency instead of a separate run.
FULL = Scale("full", 2.0, 12.0, 32, 10.0, (1, 4, 16, 32, 64), 4.0, 45, 5_000, 20_000, 32, True, 3, 10)
QUICK = Scale("quick", 0.2, 0.0, 32, 0.0, (1, 4, 16, 32, 64), 0.3, 4, 250, 1_000, 32, False, 1, 1)
TINY = Scale("tiny", 0.0, 0.0, 32, 0.0, (1, 32), 0.25, 2, 50, 200, 8, False, 1, 1)


def chat_body(stream: bool) -> bytes:
    body = {"model": "gpt-4o", "stream": stream, "temperature": 0.2, "max_tokens": 256,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]}
    return orjson.dumps(body)


def gemini_body() -> bytes:
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 256}}
    return orjson.dumps(body)


# --- subjects ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Subject:
    """One target under load: a proxy, or the simulator called directly (``server`` is None)."""

    name: str
    plain: Target
    stream: Target
    server: Server | None = None
    full: bool = True  # False: throughput and peak RSS only (the ``--workers`` row)
    result: dict[str, Any] = field(default_factory=dict)


def proxy_subject(server: Server, full: bool = True, headers: dict[str, str] | None = None) -> Subject:
    url, headers = server.url + "/v1/chat/completions", headers or {}
    return Subject(server.name, Target(server.name, url, chat_body(False), headers),
                   Target(server.name, url, chat_body(True), headers), server, full)


def direct_subject(sim: Server) -> Subject:
    """The simulator without a proxy, spoken to in Gemini: the baseline the proxies are compared to."""
    base = sim.url + "/v1beta/models/gemini-2.5-flash:"
    headers = {"x-goog-api-key": "bench-key"}
    return Subject("direct", Target("direct", base + "generateContent", gemini_body(), headers),
                   Target("direct", base + "streamGenerateContent?alt=sse", gemini_body(), headers))


def reset_simulator(sim: Server) -> None:
    """Drop the simulator's request log so it does not grow over a long run."""
    request = urllib.request.Request(sim.url + "/_sim/faults", method="DELETE")
    with urllib.request.urlopen(request, timeout=10):
        pass


# --- aggregation -------------------------------------------------------------------------------

def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several slices of one closed-loop measurement as one: summed counts, median percentiles."""
    if len(runs) == 1:
        return runs[0]
    elapsed = sum(r["elapsed_s"] for r in runs)
    done = sum(r["requests"] for r in runs)
    keys = runs[0]["latency_ms"].keys()
    return {"requests": done, "errors": sum(r["errors"] for r in runs),
            "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
            "elapsed_s": elapsed, "rps": done / elapsed if elapsed > 0 else 0.0,
            "latency_ms": {k: median(r["latency_ms"][k] for r in runs) for k in keys},
            "concurrency": runs[0]["concurrency"], "tool": runs[0]["tool"], "rounds": len(runs),
            **({"cpu_s": sum(r["cpu_s"] for r in runs)} if all("cpu_s" in r for r in runs) else {})}


def combine_streams(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {"streams": sum(r["streams"] for r in runs), "errors": sum(r["errors"] for r in runs),
                           "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
                           "events": median(r["events"] for r in runs), "tool": runs[0]["tool"],
                           "rounds": len(runs)}
    for key in ("ttfb_ms", "total_ms", "gap_ms"):
        out[key] = {k: median(r[key][k] for r in runs) for k in runs[0][key]}
    return out


# --- phases ------------------------------------------------------------------------------------

def closed_loop(driver: Driver, subject: Subject, concurrency: int, **bounds: Any) -> dict[str, Any]:
    """One closed-loop run; for a proxy, ``cpu_s`` is the CPU time its processes spent meanwhile
    (CPU per request is steadier than req/s on a machine that is busy with other work)."""
    if subject.server is None:
        return driver.plain(subject.plain, concurrency, **bounds)
    pid = subject.server.proc.pid
    before = cpu_seconds(pid)
    result = driver.plain(subject.plain, concurrency, **bounds)
    result["cpu_s"] = cpu_seconds(pid) - before
    return result


def point(driver: Driver, subject: Subject, scale: Scale, concurrency: int, seconds: float) -> dict[str, Any]:
    """One closed-loop run at ``concurrency`` for ``seconds``; with 0 seconds, the curve's point at
    that concurrency when there is one (a run of ``scale.curve_s`` otherwise)."""
    curve_points = subject.result.get("curve") or {}
    if seconds <= 0 and str(concurrency) in curve_points:
        reused: dict[str, Any] = curve_points[str(concurrency)]
        return reused
    return closed_loop(driver, subject, concurrency, duration=seconds or scale.curve_s)


def memory(driver: Driver, subject: Subject, scale: Scale) -> dict[str, Any]:
    """RSS after ``memory_first`` and after ``memory_total`` requests at ``memory_concurrency``."""
    assert subject.server is not None
    pid = subject.server.proc.pid
    first = closed_loop(driver, subject, scale.memory_concurrency, requests=scale.memory_first)
    rss_first = rss_bytes(pid)
    rest = closed_loop(driver, subject, scale.memory_concurrency, requests=scale.memory_total - scale.memory_first)
    rss_last = rss_bytes(pid)
    growth = (rss_last - rss_first) / rss_first * 100 if rss_first else 0.0
    return {"requests": [scale.memory_first, scale.memory_total], "rss_first_mib": rss_first / MIB,
            "rss_last_mib": rss_last / MIB, "growth_pct": growth, "errors": first["errors"] + rest["errors"],
            "first_error": first["first_error"] or rest["first_error"], "rps": rest["rps"],
            "cpu_us_per_request": (first["cpu_s"] + rest["cpu_s"]) / max(1, first["requests"] + rest["requests"]) * 1e6}


def _rounds(subjects: list[Subject], rounds: int, run: Callable[[Subject], dict[str, Any]],
            after: Callable[[], None]) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` slices per subject, alternating subjects within each round."""
    out: dict[str, list[dict[str, Any]]] = {s.name: [] for s in subjects}
    for _ in range(max(1, rounds)):
        for s in subjects:
            out[s.name].append(run(s))
            after()
    return out


def measure_all(sim: Server, proxies: list[Subject], scale: Scale, driver: Driver,
                say: Callable[[str], None] = lambda _m: None) -> Subject:
    """Run every phase over ``proxies`` (results land in each ``Subject.result``); returns direct."""
    direct = direct_subject(sim)
    full = [s for s in proxies if s.full]
    compared = [direct, *full]

    def reset() -> None:
        reset_simulator(sim)

    for s in full:
        say(f"memory: {s.name}, {scale.memory_total:,} requests")
        s.result["memory"] = memory(driver, s, scale)
        reset()
    if scale.warmup_s:
        for s in [direct, *proxies]:
            driver.plain(s.plain, 8, duration=scale.warmup_s)
            driver.stream(s.stream, 1)
        reset()
    say("latency vs concurrency " + ", ".join(map(str, scale.curve_levels)))
    for level in scale.curve_levels:
        for s in compared:
            run = closed_loop(driver, s, level, duration=scale.curve_s)
            s.result.setdefault("curve", {})[str(level)] = run
            reset()
    say(f"throughput at {scale.throughput_concurrency} connections")
    c, slice_s = scale.throughput_concurrency, scale.throughput_s / max(1, scale.rounds)
    runs = _rounds(proxies, scale.rounds, lambda s: point(driver, s, scale, c, slice_s), reset)
    for s in proxies:
        s.result["throughput"] = {**combine(runs[s.name]), "round_rps": [r["rps"] for r in runs[s.name]]}
    say("latency at concurrency 1 and streams, against the simulator called directly")
    slice_s = scale.latency_s / max(1, scale.latency_rounds)
    runs = _rounds(compared, scale.latency_rounds, lambda s: point(driver, s, scale, 1, slice_s), reset)
    per_round = max(1, scale.streams // max(1, scale.rounds))
    streams = _rounds(compared, scale.rounds, lambda s: driver.stream(s.stream, per_round), reset)
    for s in compared:
        s.result["latency_c1"] = combine(runs[s.name])
        s.result["stream"] = combine_streams(streams[s.name])
    for s in full:
        s.result["added_ms"] = _added(runs[s.name], runs["direct"])
        s.result["stream_overhead"] = _stream_overhead(streams[s.name], streams["direct"])
    for s in proxies:
        assert s.server is not None
        s.result["peak_rss_mib"] = peak_rss_bytes(s.server.proc.pid) / MIB
    return direct


def _added(proxy: list[dict[str, Any]], direct: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of proxy minus direct latency, each pair measured back to back."""
    diffs = {q: [p["latency_ms"][q] - d["latency_ms"][q] for p, d in zip(proxy, direct, strict=True)]
             for q in ("p50", "p99")}
    return {"p50": median(diffs["p50"]), "p99": median(diffs["p99"]), "rounds": diffs}


def _stream_overhead(proxy: list[dict[str, Any]], direct: list[dict[str, Any]]) -> dict[str, Any]:
    per_chunk, gap, ttfb = [], [], []
    for p, d in zip(proxy, direct, strict=True):
        chunks = max(1.0, d["events"])
        per_chunk.append((p["total_ms"]["p50"] - d["total_ms"]["p50"]) / chunks * 1000)
        gap.append((p["gap_ms"]["p50"] - d["gap_ms"]["p50"]) * 1000)
        ttfb.append(p["ttfb_ms"]["p50"] - d["ttfb_ms"]["p50"])
    return {"per_chunk_us": median(per_chunk), "gap_added_us": median(gap), "ttfb_added_ms": median(ttfb),
            "upstream_chunks": median(d["events"] for d in direct)}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one proxy (added latency and overheads are relative to direct)."""
    throughput = result["throughput"]
    out: dict[str, Any] = {"rps": throughput["rps"], "round_rps": throughput.get("round_rps"),
                           "peak_rss_mib": result["peak_rss_mib"]}
    if "cpu_s" in throughput and throughput["requests"]:
        out["cpu_us_per_req"] = throughput["cpu_s"] / throughput["requests"] * 1e6
    out["cpu_us_per_req_all"] = _cpu_over_all_load(result)
    runs = [result["throughput"], result.get("latency_c1"), *(result.get("curve") or {}).values()]
    errors = sum({id(r): r["errors"] for r in runs if r is not None}.values())  # a reused point counts once
    if "added_ms" in result:
        lat = result["latency_c1"]["latency_ms"]
        out["p50_ms"], out["p99_ms"] = lat["p50"], lat["p99"]
        out["added_p50_ms"], out["added_p99_ms"] = result["added_ms"]["p50"], result["added_ms"]["p99"]
    if "stream_overhead" in result:
        stream, overhead = result["stream"], result["stream_overhead"]
        out["ttfb_ms"] = stream["ttfb_ms"]["p50"]
        out["stream_total_ms"] = stream["total_ms"]["p50"]
        out["per_chunk_us"] = overhead["per_chunk_us"]
        out["gap_added_us"] = overhead["gap_added_us"]
        errors += stream["errors"]
    if "memory" in result:
        out["rss_growth_pct"] = result["memory"]["growth_pct"]
        out["rss_first_mib"] = result["memory"]["rss_first_mib"]
        out["rss_last_mib"] = result["memory"]["rss_last_mib"]
        errors += result["memory"]["errors"]
    out["errors"] = errors
    return out


def _cpu_over_all_load(result: dict[str, Any]) -> float | None:
    """CPU µs per request over every closed-loop run the proxy served (memory phase, curve, throughput,
    concurrency 1): the most requests behind one number, so the steadiest CPU cost to compare two
    proxies that received the same phases."""
    runs = {id(r): r for r in [result["throughput"], result.get("latency_c1"), *(result.get("curve") or {}).values()]
            if r is not None and "cpu_s" in r}  # a reused curve point counts once
    cpu = sum(r["cpu_s"] for r in runs.values())
    requests = sum(r["requests"] for r in runs.values())
    if "memory" in result:
        requests += result["memory"]["requests"][1]
        cpu += result["memory"]["cpu_us_per_request"] * result["memory"]["requests"][1] / 1e6
    return cpu / requests * 1e6 if requests else None
