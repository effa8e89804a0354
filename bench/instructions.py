"""CPU instructions per request, gateway vs bare, counted by valgrind's callgrind: a noise-free ratio.

Wall-clock CPU time per request swings ±25% between runs on a shared 2-core machine; instruction
counts do not (two runs of the same build agree within ~2%), so this is the number to compare before
and after a change to the request path. Each proxy runs alone under ``valgrind --tool=callgrind``
with instrumentation off; after a warm-up, instrumentation is switched on for a fixed stretch of
wrk load (32 connections, non-stream OpenAI chat → Gemini, the same request as ``run.py``), then
the counted instructions are divided by the requests wrk completed in that stretch. Start-up and
warm-up are not counted. Under valgrind a proxy runs ~50× slower, so a stretch of 8 s is a few
hundred requests.

    python bench/instructions.py              # gateway and bare, ~1.5 min; needs valgrind and wrk
    python bench/instructions.py --seconds 15 --out bench/results

Writes ``instructions.json`` and ``instructions.md`` (the table it prints) to ``--out`` (default: the
run's temporary work dir, deleted at the end).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.drive import Target, run_wrk, wrk_path  # noqa: E402
from bench.measure import chat_body  # noqa: E402
from bench.procs import BENCH_DIR, Server, gateway_config, start, start_simulator  # noqa: E402


def _callgrind(cmd: list[str], out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *cmd]


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, timeout=120, check=True)


def counted_instructions(path: Path) -> int:
    """The instructions (event Ir) a callgrind dump counted: its ``totals:`` line, else ``summary:``
    (after ``--zero`` callgrind writes ``summary: 0`` and the real count under ``totals:``)."""
    found: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            key, _, value = line.partition(":")
            found[key] = int(value.split()[0])
    total = found.get("totals") or found.get("summary")
    if total is None:
        raise RuntimeError(f"no instruction total in {path}")
    return total


def measure(name: str, cmd: list[str], env: dict[str, str], work: Path, seconds: float, wrk: str) -> dict[str, Any]:
    """Instructions per request of one proxy started with ``cmd`` under callgrind."""
    dump = work / f"{name}.callgrind"
    server: Server = start(name, _callgrind(cmd, dump), work, env=env)
    try:
        server.wait_ready("/healthz", timeout=180)
        target = Target(name, server.url + "/v1/chat/completions", chat_body(False))
        run_wrk(wrk, target, 32, 3)  # warm-up: pools, caches and lazy imports, not counted
        _control(server.proc.pid, "--zero")
        _control(server.proc.pid, "--instr=on")
        load = run_wrk(wrk, target, 32, seconds)
        _control(server.proc.pid, "--instr=off")
        _control(server.proc.pid, "--dump")
        time.sleep(0.5)
        dumps = sorted(work.glob(f"{name}.callgrind.*"))  # ".1": the requested dump, not the one at exit
        if not dumps:
            raise RuntimeError(f"{name}: callgrind wrote no dump")
        total = counted_instructions(dumps[0])
    finally:
        server.stop()
    if load["errors"] or not load["requests"]:
        raise RuntimeError(f"{name}: {load['errors']} errors under callgrind ({load['first_error']})")
    return {"requests": load["requests"], "instructions": total, "per_request": total / load["requests"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="counted stretch of load per proxy")
    parser.add_argument("--out", type=Path, help="directory for instructions.json")
    args = parser.parse_args(argv)
    wrk = wrk_path()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None or wrk is None:
        print("instructions: needs valgrind (callgrind) and wrk: apt-get install valgrind wrk", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp:
        work = Path(tmp)
        sim = start_simulator(work, chunks=3)
        try:
            env = {"BENCH_SIM_URL": sim.url}
            config = gateway_config(work)
            targets = {
                "gateway": [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", "{port}"],
                "bare": [sys.executable, str(BENCH_DIR / "bare_proxy.py"), "--port", "{port}", "--upstream", sim.url],
            }
            results = {name: measure(name, cmd, env, work, args.seconds, wrk) for name, cmd in targets.items()}
        finally:
            sim.stop()
        ratio = results["gateway"]["per_request"] / results["bare"]["per_request"]
        report = {"seconds": args.seconds, "results": results, "gateway_over_bare": ratio}
        out = args.out or work
        out.mkdir(parents=True, exist_ok=True)
        (out / "instructions.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    table = "\n".join(["| target | requests counted | instructions / request |", "|---|---:|---:|",
                        *(f"| {name} | {r['requests']} | {r['per_request']:,.0f} |" for name, r in results.items()),
                        f"| **gateway/bare** | | {ratio:.2f}× |"])
    if args.out:
        (out / "instructions.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
