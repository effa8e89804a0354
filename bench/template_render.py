"""Micro-benchmark of the per-request template work: the shipped Gemini template rendered for the
bench's chat request (url, query, headers, body: ``upstream.render_request``), its body alone, and
the response headers (``exchange.response_headers``), cached and rendered.

    python bench/template_render.py                 # µs per render, best of 5 rounds
    python bench/template_render.py --count 20000   # just render that often (run it under callgrind
                                                    # with --count 0 and N: the difference / N is
                                                    # the instructions of one render)

The numbers are what the decisions about the template fast path are based on (see
``router/template_codegen.py``, ``exchange.response_headers``): compare them with
``bench/instructions.py``'s gateway row.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import chat_body  # noqa: E402
from router.client_codecs import openai_chat  # noqa: E402
from router.exchange import Exchange, _render_headers, response_headers  # noqa: E402
from router.registry import template_filters  # noqa: E402
from router.snapshot import build  # noqa: E402
from router.upstream_request import render_request  # noqa: E402

ROUTES = Path(__file__).resolve().parent.parent / "router" / "routes.d"


def subjects() -> dict[str, Callable[[], Any]]:
    """The renders to time, each a call without arguments."""
    snap, _ = build(ROUTES, 1, template_filters(), env={"GEMINI_API_KEY": "k"})
    provider = snap.providers["gemini"]
    account = provider.pool.accounts[0]
    request = openai_chat.decode_request(orjson.loads(chat_body(False)))
    ctx = {"request": request, "model": "gemini-2.5-flash", "stream": request.stream, "client_headers": {},
           "provider": provider.template_view, "account": account.template_view}
    x = Exchange("req-1", snap, None, 0.0, client_model="gpt-4o", provider=provider,
                 upstream_model="gemini-2.5-flash", account=account, attempt=1)
    return {
        "render_request (gemini)": lambda: render_request(provider.template, ctx, provider.base_url),
        "body (gemini)": lambda: provider.template.body.render(ctx),
        "response_headers": lambda: response_headers(x),
        # what every response would cost without the snapshot's header cache
        "response_headers rendered": lambda: {"X-Request-Id": x.request_id, **_render_headers(x)},
    }


def best_of(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    """µs per call, the best of ``rounds`` runs of ``n`` calls."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, help="render each subject this often, print nothing")
    parser.add_argument("--only", help="the one subject to render (with --count)")
    args = parser.parse_args()
    cases = subjects()
    if args.count is not None:
        for name, fn in cases.items():
            if args.only is None or args.only in name:
                for _ in range(args.count):
                    fn()
        return
    for name, fn in cases.items():
        print(f"{name:28} {best_of(fn, 20_000):7.2f} µs")


if __name__ == "__main__":
    main()
