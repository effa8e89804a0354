"""Command line: ``router serve``, ``router check DIR``, ``router init DIR``, ``router hash-key``, ``router sim``;
``router explain``, ``router test`` and ``router diff`` are in :mod:`router.tools_cli`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from router import __version__
from router.errors import ConfigErrors
from router.state_settings import StateSettings

if TYPE_CHECKING:
    from router.worker_dir import WorkerDir

DEFAULT_CONFIG = "routes.d"


def _config_dir(value: str | None) -> Path:
    """--config/DIR, else $ROUTER_CONFIG, else ./routes.d, else the packaged default (said on stderr)."""
    chosen = value or os.environ.get("ROUTER_CONFIG")
    if chosen:
        return Path(chosen)
    if Path(DEFAULT_CONFIG).exists():  # a checkout, or a dir made by `router init routes.d`
        return Path(DEFAULT_CONFIG)
    from router.resources import default_config_dir

    packaged = default_config_dir()
    print(f"router: no --config, $ROUTER_CONFIG or ./{DEFAULT_CONFIG}: using the packaged default config "
          f"{packaged} (served by the bundled simulator until a provider key is set); "
          "`router init DIR` writes an editable copy", file=sys.stderr)
    return packaged


def setup_logging(level: str = "info", fmt: str = "text", worker: int | None = None) -> None:
    from router.logs import configure

    configure(level, fmt, worker)


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when valid, 1 with every error (text: one ``file:line:col: ...`` line each; json: one
    document on stdout). Argument errors exit 2, as argparse does."""
    from router.registry import template_filters
    from router.snapshot import check_dir

    directory = _config_dir(args.dir)
    loaded, errors = check_dir(directory, template_filters(), require_keys=args.require_keys,
                               placeholders=args.placeholder_secrets)
    if args.format == "json":
        print(json.dumps({
            "ok": not errors, "dir": str(directory),
            "files": [{"name": n, "sha256": h} for n, h in loaded.files],
            "ignored": loaded.ignored,
            "errors": [e.as_dict() for e in errors],
        }, indent=2))
        return 1 if errors else 0
    for name in loaded.ignored:
        print(f"note: {name} is not read (hidden, backup, or in a subdirectory)", file=sys.stderr)
    if errors:
        for e in errors:
            print(str(e), file=sys.stdout)
        print(f"{len(errors)} error(s) in {directory}", file=sys.stderr)
        return 1
    print(f"{directory}: ok ({len(loaded.files)} file(s))")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from router.config import load_dir
    from router.gateway import Gateway
    from router.listen import url as listen_url
    from router.loops import new_event_loop
    from router.registry import template_filters
    from router.runner import run, serve
    from router.snapshot import BUILTIN_SIMULATOR, compile_config

    directory = _config_dir(args.config)
    loaded = load_dir(directory)
    try:  # validate before binding; the simulator's real URL is filled in at start
        snap = compile_config(loaded, 0, template_filters(), {BUILTIN_SIMULATOR: "http://127.0.0.1:0"}, args.host,
                              args.require_keys)
    except ConfigErrors as e:
        for err in e.errors:
            print(str(err), file=sys.stderr)
        print(f"refusing to start: {len(e.errors)} config error(s) in {directory}", file=sys.stderr)
        return 1
    setup_logging(args.log_level or snap.logging.level, snap.logging.format, args.worker)
    host = args.host or snap.server.host
    port = args.port if args.port is not None else snap.server.port
    sockets = _listening_sockets(args, host, port)
    if sockets is None:
        return 1
    if args.workers and args.workers > 1:
        from router.workers import serve_workers

        log = logging.getLogger("router")
        log.info("router %s listening on %s with %d workers (config %s)", __version__,
                 ", ".join(listen_url(s) for s in sockets), args.workers, directory)
        _say_what_is_per_worker(log, args.workers, snap.state)
        extra = (["--log-level", args.log_level] if args.log_level else []) + \
            (["--require-keys"] if args.require_keys else [])
        return serve_workers(args.workers, directory, host, sockets, snap.server.shutdown_grace, extra)
    worker = args.worker or 0  # a --workers child: only the first one logs the config summary
    gateway = Gateway(directory, bind_host=host, manage_logging=args.log_level is None, announce=worker == 0,
                      require_keys=args.require_keys, worker=args.worker, worker_dir=_worker_dir(args))
    run(serve(gateway, sockets, shutdown_timeout=snap.server.shutdown_grace, announce=not args.listen_fd),
        new_event_loop())
    return 0


def _worker_dir(args: argparse.Namespace) -> WorkerDir | None:
    """A --workers child's side of the directory its parent shares with the workers (None otherwise)."""
    if args.worker is None or args.worker_dir is None:
        return None
    from router.worker_dir import WorkerDir

    return WorkerDir(Path(args.worker_dir), args.worker)


def cmd_init(args: argparse.Namespace) -> int:
    from router.resources import write_starter_config

    target = Path(args.dir)
    if target.exists() and not target.is_dir():
        print(f"router init: {target} exists and is not a directory", file=sys.stderr)
        return 1
    if target.is_dir() and any(target.iterdir()) and not args.force:
        print(f"router init: {target} is not empty; name a new or empty dir, or add --force to "
              "overwrite the starter files in it", file=sys.stderr)
        return 1
    try:
        written = write_starter_config(target)
    except OSError as e:
        print(f"router init: cannot write {e.filename or target}: {e.strerror or e}", file=sys.stderr)
        return 1
    schemas = [p for p in written if p.suffix == ".json"]
    for path in written:
        if path not in schemas:
            print(f"wrote {path}")
    if schemas:
        print(f"wrote {schemas[0].parent}/ ({len(schemas)} JSON Schemas, used by the files' modelines)")
    quoted = shlex.quote(str(target))
    print(f"next: router check {quoted} && router serve --config {quoted}")
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


def cmd_hash_key(args: argparse.Namespace) -> int:
    """The sha256 of one key read from stdin (never from argv: shell history and ``ps`` would show it),
    for ``key_sha256:`` in ``auth.api_keys``. Surrounding whitespace is not part of a key: a client
    cannot send it, and ``${file:...}`` strips it too."""
    from router.auth import key_digest

    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("key (not echoed): ").strip()
    else:
        key = sys.stdin.buffer.read().decode("utf-8", "surrogateescape").strip()  # any bytes, as a header has
    if not key or any(c.isspace() for c in key):
        print("router hash-key: give one key on stdin (e.g. printf %s \"$KEY\" | router hash-key); "
              + ("it was empty" if not key else "it holds whitespace: one key per run"), file=sys.stderr)
        return 1
    print(key_digest(key).hex())
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from router.sim import run

    setup_logging("info")
    run(args.port, host=args.host, latency=args.latency, chunks=args.chunks, chunk_delay=args.chunk_delay)
    return 0


REQUIRE_KEYS_HELP = ("a provider whose accounts have no key is a config error instead of a silent "
                     "fallback (e.g. to the simulator); same as server.require_keys: true")


def _say_what_is_per_worker(log: logging.Logger, workers: int, state: StateSettings) -> None:
    """At start-up with --workers: what each worker keeps to itself, and how to share it."""
    if state.shared:
        log.info("%d workers sharing account cooldowns, failure counts, sticky sessions, stored responses "
                 "(previous_response_id) and tool-call signatures through %s; round-robin positions are per "
                 "worker; log lines carry the worker's index (/metrics counts every worker; SIGHUP to this "
                 "process or POST /admin/reload reloads every worker)", workers, state.public()["address"])
        return
    log.warning("%d workers, each with its own memory (state.backend: memory): account cooldowns, round-robin "
                "and sticky sessions, the Responses store (previous_response_id) and tool-call signatures are "
                "per worker; to share them set state: {backend: redis, url: ...} (README: Several workers and "
                "replicas); log lines carry the worker's index (/metrics counts every worker; SIGHUP to this "
                "process or POST /admin/reload reloads every worker)", workers)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="router", description="Declarative, config-driven LLM API gateway")
    p.add_argument("--version", action="version", version=f"router {__version__}")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", help=f"config dir (default $ROUTER_CONFIG, else ./{DEFAULT_CONFIG}, "
                                    "else the packaged default)")
    s.add_argument("--host", help="bind address (default from server.allow_lan_access)")
    s.add_argument("--port", type=int, help="port (default server.port, 8045)")
    s.add_argument("--workers", type=int, default=1, help="worker processes accepting on the one port")
    # a --workers child: the parent's listening sockets (inherited fds) and the child's index
    s.add_argument("--listen-fd", type=int, action="append", help=argparse.SUPPRESS)
    s.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    s.add_argument("--worker-dir", help=argparse.SUPPRESS)  # the parent's private dir shared with its workers
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument("--require-keys", action="store_true", help=REQUIRE_KEYS_HELP)
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("check", help="validate a config dir offline (exit 0 valid, 1 errors, 2 usage)")
    c.add_argument("dir", nargs="?", help=f"config dir (default $ROUTER_CONFIG, else ./{DEFAULT_CONFIG}, "
                                          "else the packaged default)")
    c.add_argument("--require-keys", action="store_true", help=REQUIRE_KEYS_HELP)
    c.add_argument("--placeholder-secrets", action="store_true",
                   help="for CI without the runtime secrets: an unset ${VAR} (no default or an empty one) "
                        "resolves to 'placeholder-VAR', an unreadable ${file:...} to 'placeholder-file'")
    c.add_argument("--format", choices=["text", "json"], default="text",
                   help="json: one document {ok, dir, files, ignored, errors[file, line, column, pointer, "
                        "message, text]} on stdout")
    c.set_defaults(func=cmd_check)
    i = sub.add_parser("init", help="write a starter config dir (the default config plus its schemas)")
    i.add_argument("dir", help="the dir to create (refused when it is not empty, unless --force)")
    i.add_argument("--force", action="store_true", help="write into a non-empty dir, replacing same-named files")
    i.set_defaults(func=cmd_init)
    h = sub.add_parser("hash-key", help="print the sha256 of a client key read from stdin (for key_sha256:)")
    h.set_defaults(func=cmd_hash_key)
    m = sub.add_parser("sim", help="run the bundled upstream simulator")
    m.add_argument("--port", type=int, default=8046)
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--latency", type=float, default=0.0)
    m.add_argument("--chunks", type=int, default=3)
    m.add_argument("--chunk-delay", type=float, default=0.0)
    m.set_defaults(func=cmd_sim)
    from router.tools_cli import add_parsers

    add_parsers(sub, f"config dir (default $ROUTER_CONFIG, else ./{DEFAULT_CONFIG}, else the packaged default)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        args = parser.parse_args(["serve", *(argv or [])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
