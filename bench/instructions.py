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
    python bench/instructions.py --state both # gateway (memory), gateway state:redis, bare; needs redis-server
    python bench/instructions.py --auth all   # auth off, a client key, a key with limits (and bare)

``--auth`` picks what the gateway's clients present: ``off`` (the default: auth off, as ``run.py``),
``key`` (``auth.mode: strict`` and one client key, in a team, no limits), ``limits`` (that key with
``limits: {rpm, tpm, concurrency}`` too high to be reached, so every request is admitted and carries
the rate-limit headers), or ``all`` (the three, one after the other, for the cost of each).

With ``--state redis`` (or ``both``) the gateway runs with ``state: {backend: redis}`` at a
redis-server this script starts on loopback, and the table adds the Redis commands it sent per
request. The background sync (one round trip per ``sync_interval``, 1 s of wall time) is counted
too; under callgrind a second holds ~50× fewer requests than at full speed, so its share per request
is overstated about that much: the redis count is an upper bound of the real cost.

Writes ``instructions.json`` and ``instructions.md`` (the table it prints) to ``--out`` (default: the
run's temporary work dir, deleted at the end).
"""

from __future__ import annotations

import argparse
import hashlib
import re
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
from bench.procs import (  # noqa: E402
    BENCH_DIR,
    REDIS_SUFFIX,
    Server,
    gateway_config,
    redis_stats,
    redis_url,
    start,
    start_redis,
    start_simulator,
)

# Under callgrind the event loop runs ~50x slower: the shipped 50 ms / 200 ms would time out replies
# and connections that were on time but read late, marking the backend down. They cost no instructions.
REDIS_UNDER_CALLGRIND = {"timeout": "5s", "connect_timeout": "5s"}

# --auth: what the gateway's clients present (each case a config added over the bench's, and a header)
BENCH_KEY = "bench-client-key"
AUTH_CASES = ("off", "key", "limits")
AUTH_OFF = 'auth:\n  mode: "off"\n'  # in bench/config/00-server.yaml
_KEY_ENTRY = (f'    - name: bench\n      key_sha256: "{hashlib.sha256(BENCH_KEY.encode()).hexdigest()}"\n'
              "      team: bench\n")
AUTH_CONFIG = {
    "key": "auth:\n  mode: strict\n  api_keys:\n" + _KEY_ENTRY + "  teams:\n    bench: {}\n",
    "limits": "auth:\n  mode: strict\n  api_keys:\n" + _KEY_ENTRY
              + "      limits: {rpm: 100000000, tpm: 1000000000000, concurrency: 100000}\n"
              + "  teams:\n    bench: {}\n",
}


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


def gc_instructions(path: Path) -> int | None:
    """Instructions the dump counts inside CPython's cycle collector (``gc_collect_main``, inclusive);
    None without ``callgrind_annotate``. A full (generation 2) pass runs every ~2,000 requests and
    costs ~50,000 instructions per request of an 8 s window: whether one falls in the window moves
    the total by ~5%, so the total is also shown without it."""
    if shutil.which("callgrind_annotate") is None:
        return None
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
                         capture_output=True, text=True, timeout=300, check=False).stdout
    found = [int(m.group(1).replace(",", "")) for m in re.finditer(r"^\s*([\d,]+) .*:gc_collect_main\b", out, re.M)]
    return max(found, default=0)


def measure(name: str, cmd: list[str], env: dict[str, str], work: Path, seconds: float, wrk: str,
            redis: Server | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Instructions per request of one proxy started with ``cmd`` under callgrind; with ``redis``,
    also the Redis commands per request the proxy sent in the counted stretch."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name)
    dump = work / f"{slug}.callgrind"
    server: Server = start(name, _callgrind(cmd, dump), work, env=env)
    commands: list[int] = []
    try:
        server.wait_ready("/healthz", timeout=180)
        target = Target(name, server.url + "/v1/chat/completions", chat_body(False), headers or {})
        run_wrk(wrk, target, 32, 3)  # warm-up: pools, caches and lazy imports, not counted
        commands += [redis_stats(redis)["commands"]] if redis else []
        _control(server.proc.pid, "--zero")
        _control(server.proc.pid, "--instr=on")
        load = run_wrk(wrk, target, 32, seconds)
        _control(server.proc.pid, "--instr=off")
        commands += [redis_stats(redis)["commands"] - 1] if redis else []  # the first INFO is one
        _control(server.proc.pid, "--dump")
        time.sleep(0.5)
        dumps = sorted(work.glob(f"{slug}.callgrind.*"))  # ".1": the requested dump, not the one at exit
        if not dumps:
            raise RuntimeError(f"{name}: callgrind wrote no dump")
        total, in_gc = counted_instructions(dumps[0]), gc_instructions(dumps[0])
    finally:
        server.stop()
    if load["errors"] or not load["requests"]:
        raise RuntimeError(f"{name}: {load['errors']} errors under callgrind ({load['first_error']})")
    result = {"requests": load["requests"], "instructions": total, "per_request": total / load["requests"]}
    if in_gc is not None:
        result.update(gc_instructions=in_gc, per_request_without_gc=(total - in_gc) / load["requests"])
    if redis:
        result["redis_commands_per_request"] = (commands[1] - commands[0]) / load["requests"]
        result["backend_down_logged"] = "unreachable" in server.log.read_text(errors="replace")
    return result


def _with_auth(config: Path, case: str) -> Path:
    """A copy of the gateway's config directory with ``case``'s auth section on top (``off``: as is)."""
    if case == "off":
        return config
    directory = config.with_name(f"{config.name}-{case}")
    shutil.copytree(config, directory, dirs_exist_ok=True)
    server = directory / "00-server.yaml"  # a section is defined in one file: the bench's auth off is replaced
    text = server.read_text()
    if AUTH_OFF not in text:
        raise RuntimeError(f"{server}: no {AUTH_OFF!r} to replace with --auth {case}")
    server.write_text(text.replace(AUTH_OFF, f"# bench/instructions.py --auth {case}\n" + AUTH_CONFIG[case]))
    return directory


def _targets(state: str, auth: tuple[str, ...], work: Path, sim: Server, redis: Server | None
             ) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each proxy to count: its command and environment (``state``: which gateway backends; ``auth``:
    which auth cases, each a gateway of its own named after it)."""
    serve = [sys.executable, "-m", "router", "serve", "--port", "{port}", "--config"]
    env = {"BENCH_SIM_URL": sim.url}
    targets: dict[str, tuple[list[str], dict[str, str]]] = {}
    for case in auth:
        suffix = "" if case == "off" else f" auth:{case}"
        if state in ("memory", "both"):
            targets["gateway" + suffix] = ([*serve, str(_with_auth(gateway_config(work), case))], env)
        if redis is not None:
            config = _with_auth(gateway_config(work, REDIS_UNDER_CALLGRIND), case)
            targets["gateway" + REDIS_SUFFIX + suffix] = ([*serve, str(config)],
                                                          {**env, "BENCH_REDIS_URL": redis_url(redis)})
    bare = [sys.executable, str(BENCH_DIR / "bare_proxy.py"), "--port", "{port}", "--upstream", sim.url]
    targets["bare"] = (bare, env)
    return targets


def _ratios(results: dict[str, dict[str, Any]], key: str) -> dict[str, float]:
    """Every gateway over bare and, when both were counted, redis over memory, of ``key``."""
    per = {name: r[key] for name, r in results.items() if key in r}
    out = {f"{name}/bare": value / per["bare"] for name, value in per.items() if name != "bare" and "bare" in per}
    if "gateway" in per and "gateway" + REDIS_SUFFIX in per:
        out[f"gateway{REDIS_SUFFIX}/gateway"] = per["gateway" + REDIS_SUFFIX] / per["gateway"]
    for name in per:  # each auth case over the same backend with auth off
        base = name.partition(" auth:")[0]
        if name != base and base in per:
            out[f"{name}/{base}"] = per[name] / per[base]
    return out


# (column title, result key, format); a column shows when some result has its key.
COLUMNS = (("requests counted", "requests", "{:d}"), ("instructions / request", "per_request", "{:,.0f}"),
           ("without the cycle collector", "per_request_without_gc", "{:,.0f}"),
           ("Redis commands / request", "redis_commands_per_request", "{:.3f}"))
RATIO_COLUMNS = ("per_request", "per_request_without_gc")


def _table(results: dict[str, dict[str, Any]], ratios: dict[str, dict[str, float]]) -> str:
    shown = [c for c in COLUMNS if any(c[1] in r for r in results.values())]
    rows = ["| target | " + " | ".join(title for title, _, _ in shown) + " |", "|---|" + "---:|" * len(shown)]
    rows += [f"| {name} | " + " | ".join(fmt.format(r[key]) if key in r else "" for _, key, fmt in shown) + " |"
             for name, r in results.items()]
    for name in ratios.get("per_request", {}):  # redis/memory in 3 decimals: a few percent matter there
        cells = [f"{ratios[key][name]:.{2 if name.endswith('/bare') else 3}f}×" if key in ratios else ""
                 for _, key, _ in shown]
        rows.append(f"| **{name}** | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _count(args: argparse.Namespace, work: Path, wrk: str) -> dict[str, dict[str, Any]]:
    """Start the simulator (and a redis-server for ``--state redis|both``), count each proxy in turn."""
    sim = start_simulator(work, chunks=3)
    redis = start_redis(work) if args.state != "memory" else None
    try:
        auth = AUTH_CASES if args.auth == "all" else (args.auth,)
        targets = _targets(args.state, auth, work, sim, redis)
        return {name: measure(name, cmd, env, work, args.seconds, wrk, redis if REDIS_SUFFIX in name else None,
                              {"Authorization": f"Bearer {BENCH_KEY}"} if " auth:" in name else None)
                for name, (cmd, env) in targets.items()}
    finally:
        sim.stop()
        if redis is not None:
            redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="counted stretch of load per proxy")
    parser.add_argument("--state", choices=("memory", "redis", "both"), default="memory",
                        help="the gateway's state backend: memory (default), redis (a redis-server on loopback), "
                             "or both, one after the other")
    parser.add_argument("--auth", choices=(*AUTH_CASES, "all"), default="off",
                        help="what the gateway's clients present: auth off (default), a client key, a key with "
                             "limits, or all three one after the other")
    parser.add_argument("--out", type=Path, help="directory for instructions.json")
    args = parser.parse_args(argv)
    wrk = wrk_path()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None or wrk is None:
        print("instructions: needs valgrind (callgrind) and wrk: apt-get install valgrind wrk", file=sys.stderr)
        return 2
    if args.state != "memory" and shutil.which("redis-server") is None:
        print("instructions: --state redis needs redis-server: apt-get install redis-server", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp:
        work = Path(tmp)
        results = _count(args, work, wrk)
        ratios = {key: _ratios(results, key) for key in RATIO_COLUMNS if any(key in r for r in results.values())}
        report = {"seconds": args.seconds, "state": args.state, "results": results, "ratios": ratios,
                  **({"gateway_over_bare": ratios["per_request"]["gateway/bare"]}
                     if "gateway/bare" in ratios["per_request"] else {})}
        out = args.out or work
        out.mkdir(parents=True, exist_ok=True)
        (out / "instructions.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    table = _table(results, ratios)
    if args.out:
        (out / "instructions.md").write_text(table + "\n")
    print(table)
    for name, r in results.items():
        if r.get("backend_down_logged"):
            print(f"instructions: {name} logged its state backend unreachable: its count is not the "
                  "redis path alone", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
