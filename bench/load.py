"""A small async HTTP load generator, run as its own process so it does not share the proxy's loop.

Two modes, both printing one JSON object on stdout:

* ``plain``: ``--concurrency`` keep-alive connections POST the same body until ``--requests`` are done
  or ``--duration`` seconds pass; reports requests/s, errors and latency percentiles (ms).
* ``stream``: ``--requests`` sequential SSE requests; reports time to first event, total time,
  events per stream and the gaps between events (ms);
* ``serve``: a long-lived worker that runs such jobs given as JSON lines on stdin (what
  ``bench/drive.py`` uses, so a run does not pay an interpreter start per measurement).

    python bench/load.py plain --url http://127.0.0.1:8045/v1/chat/completions --body-file b.json -c 32 -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def summarise(latencies_ms: list[float]) -> dict[str, float]:
    return {"p50": percentile(latencies_ms, 50), "p90": percentile(latencies_ms, 90),
            "p99": percentile(latencies_ms, 99), "mean": sum(latencies_ms) / max(1, len(latencies_ms)),
            "max": max(latencies_ms, default=0.0)}


@dataclass(slots=True)
class _Plain:
    remaining: int | None
    deadline: float | None
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def take(self) -> bool:
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return False
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


async def _plain_worker(session: ClientSession, url: str, body: bytes, headers: dict[str, str],
                        state: _Plain) -> None:
    while state.take():
        start = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                ok = resp.status == 200
                problem = f"HTTP {resp.status}"
        except (TimeoutError, ClientError) as exc:
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        if ok:
            state.latencies.append((time.perf_counter() - start) * 1000)
        else:
            state.errors += 1
            state.first_error = state.first_error or problem


async def run_plain(url: str, body: bytes, headers: dict[str, str], concurrency: int,
                    requests: int | None = None, duration: float | None = None) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` workers, bounded by ``requests`` and/or ``duration``."""
    if requests is None and duration is None:
        raise ValueError("give requests or duration")
    timeout = ClientTimeout(total=60)
    async with ClientSession(connector=TCPConnector(limit=concurrency), timeout=timeout) as session:
        start = time.perf_counter()
        state = _Plain(requests, start + duration if duration else None)
        await asyncio.gather(*(_plain_worker(session, url, body, headers, state) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    done = len(state.latencies)
    return {"requests": done, "errors": state.errors, "first_error": state.first_error,
            "elapsed_s": elapsed, "rps": done / elapsed if elapsed > 0 else 0.0,
            "latency_ms": summarise(state.latencies), "concurrency": concurrency, "tool": "load.py"}


async def _one_stream(session: ClientSession, url: str, body: bytes, headers: dict[str, str]
                      ) -> tuple[float, float, list[float]] | str:
    """(time to first event, total, gaps between events) in ms, or an error description."""
    start = time.perf_counter()
    stamps: list[float] = []
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                return f"HTTP {resp.status}: {(await resp.read())[:200]!r}"
            async for line in resp.content:
                if line.startswith(b"data:") and not line.startswith(b"data: [DONE]"):
                    stamps.append(time.perf_counter())
    except (TimeoutError, ClientError) as exc:
        return f"{type(exc).__name__}: {exc}"
    end = time.perf_counter()
    if not stamps:
        return "no events"
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
    return (stamps[0] - start) * 1000, (end - start) * 1000, gaps


async def run_stream(url: str, body: bytes, headers: dict[str, str], requests: int) -> dict[str, Any]:
    """``requests`` sequential streams over one keep-alive connection."""
    ttfb: list[float] = []
    totals: list[float] = []
    gaps: list[float] = []
    events: list[int] = []
    errors: list[str] = []
    async with ClientSession(connector=TCPConnector(limit=1), timeout=ClientTimeout(total=120)) as session:
        for _ in range(requests):
            result = await _one_stream(session, url, body, headers)
            if isinstance(result, str):
                errors.append(result)
                continue
            ttfb.append(result[0])
            totals.append(result[1])
            gaps.extend(result[2])
            events.append(len(result[2]) + 1)
    return {"streams": len(totals), "errors": len(errors), "first_error": errors[0] if errors else None,
            "ttfb_ms": summarise(ttfb), "total_ms": summarise(totals), "gap_ms": summarise(gaps),
            "events": round(sum(events) / max(1, len(events)), 1), "tool": "load.py"}


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One job of ``serve`` mode: the keyword arguments of ``run_plain``/``run_stream`` as JSON."""
    body = job["body"].encode()
    headers = {"Content-Type": "application/json", **job.get("headers", {})}
    if job["mode"] == "stream":
        return await run_stream(job["url"], body, headers, job["requests"])
    return await run_plain(job["url"], body, headers, job["concurrency"], job.get("requests"), job.get("duration"))


async def serve() -> None:
    """Run JSON jobs read line by line from stdin, one JSON result line each, until stdin closes.

    One long-lived process saves an interpreter start per measurement."""
    for line in sys.stdin:  # blocking between jobs is fine: nothing else runs on this loop then
        if not line.strip():
            continue
        try:
            result = await run_job(orjson.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        sys.stdout.flush()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="bounded HTTP load generator (prints JSON)")
    parser.add_argument("mode", choices=["plain", "stream", "serve"], help="serve: JSON jobs on stdin")
    parser.add_argument("--url")
    parser.add_argument("--body-file")
    parser.add_argument("--header", action="append", default=[], help="Name: value (repeatable)")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-n", "--requests", type=int)
    parser.add_argument("-d", "--duration", type=float)
    return parser.parse_args(argv)


def _runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.mode == "serve":
        _runner()(serve())
        return 0
    if not args.url or not args.body_file:
        raise SystemExit("--url and --body-file are required")
    with open(args.body_file, encoding="utf-8") as fh:
        job: dict[str, Any] = {"mode": args.mode, "url": args.url, "body": fh.read(), "headers": {},
                               "concurrency": args.concurrency, "requests": args.requests or 10,
                               "duration": args.duration}
    if args.mode == "plain":
        job["requests"] = args.requests
    for item in args.header:
        name, _, value = item.partition(":")
        job["headers"][name.strip()] = value.strip()
    sys.stdout.write(orjson.dumps(_runner()(run_job(job))).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
