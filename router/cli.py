"""Command line: ``router serve``, ``router check DIR``, ``router sim``."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from router import __version__
from router.errors import ConfigErrors

DEFAULT_CONFIG = "routes.d"


def _config_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("ROUTER_CONFIG") or DEFAULT_CONFIG)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    from router.logs import configure

    configure(level, fmt)


def cmd_check(args: argparse.Namespace) -> int:
    from router.filters import all_filters
    from router.snapshot import check

    directory = _config_dir(args.dir)
    errors = check(directory, all_filters())
    if errors:
        for e in errors:
            print(str(e), file=sys.stdout)
        print(f"{len(errors)} error(s) in {directory}", file=sys.stderr)
        return 1
    print(f"{directory}: ok")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from router.app import run, serve
    from router.loops import new_event_loop
    from router.config import load_dir
    from router.filters import all_filters
    from router.gateway import Gateway
    from router.listen import url as listen_url
    from router.snapshot import BUILTIN_SIMULATOR, compile_config

    directory = _config_dir(args.config)
    loaded = load_dir(directory)
    try:  # validate before binding; the simulator's real URL is filled in at start
        snap = compile_config(loaded, 0, all_filters(), {BUILTIN_SIMULATOR: "http://127.0.0.1:0"}, args.host)
    except ConfigErrors as e:
        for err in e.errors:
            print(str(err), file=sys.stderr)
        print(f"refusing to start: {len(e.errors)} config error(s) in {directory}", file=sys.stderr)
        return 1
    log_cfg = snap.logging
    setup_logging(args.log_level or log_cfg.get("level", "info"), log_cfg.get("format", "text"))
    host = args.host or snap.server.host
    port = args.port if args.port is not None else snap.server.port
    sockets = _listening_sockets(args, host, port)
    if sockets is None:
        return 1
    if args.workers and args.workers > 1:
        from router.workers import serve_workers

        logging.getLogger("router").info("router %s listening on %s with %d workers (config %s)", __version__,
                                         ", ".join(listen_url(s) for s in sockets), args.workers, directory)
        extra = ["--log-level", args.log_level] if args.log_level else []
        return serve_workers(args.workers, directory, host, sockets, snap.server.shutdown_grace, extra)
    worker = args.worker or 0  # a --workers child: only the first one logs the config summary
    gateway = Gateway(directory, bind_host=host, manage_logging=args.log_level is None, announce=worker == 0)
    run(serve(gateway, sockets, shutdown_timeout=snap.server.shutdown_grace, announce=not args.listen_fd),
        new_event_loop())
    return 0


def _listening_sockets(args: argparse.Namespace, host: str, port: int) -> list[socket.socket] | None:
    """The sockets to serve: inherited from a ``--workers`` parent, else bound here, before anything
    starts. None (after one line on stderr) when the port cannot be had."""
    from router.listen import ListenError, bind

    if args.listen_fd:
        return [socket.socket(fileno=fd) for fd in args.listen_fd]
    try:
        return bind(host, port)
    except ListenError as e:
        print(f"refusing to start: {e}", file=sys.stderr)
        return None


def cmd_sim(args: argparse.Namespace) -> int:
    from router.sim import run

    setup_logging("info")
    run(args.port, host=args.host, latency=args.latency, chunks=args.chunks, chunk_delay=args.chunk_delay)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="router", description="Declarative, config-driven LLM API gateway")
    p.add_argument("--version", action="version", version=f"router {__version__}")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", help=f"config dir (default $ROUTER_CONFIG or ./{DEFAULT_CONFIG})")
    s.add_argument("--host", help="bind address (default from server.allow_lan_access)")
    s.add_argument("--port", type=int, help="port (default server.port, 8045)")
    s.add_argument("--workers", type=int, default=1, help="worker processes accepting on the one port")
    # a --workers child: the parent's listening sockets (inherited fds) and the child's index
    s.add_argument("--listen-fd", type=int, action="append", help=argparse.SUPPRESS)
    s.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("check", help="validate a config dir offline (exit 1 on errors)")
    c.add_argument("dir", nargs="?", help=f"config dir (default ./{DEFAULT_CONFIG})")
    c.set_defaults(func=cmd_check)
    m = sub.add_parser("sim", help="run the bundled upstream simulator")
    m.add_argument("--port", type=int, default=8046)
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--latency", type=float, default=0.0)
    m.add_argument("--chunks", type=int, default=3)
    m.add_argument("--chunk-delay", type=float, default=0.0)
    m.set_defaults(func=cmd_sim)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        args = parser.parse_args(["serve", *(argv or [])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
