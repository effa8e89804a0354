"""The simulator's aiohttp wiring: one app for every dialect (Bedrock's included) plus the ``/_sim`` control API."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from router.loops import new_event_loop
from router.sim import anthropic, azure, bedrock, gemini, oauth, openai, vertex
from router.sim.exchange import serve
from router.sim.faults import Fault, parse_fault
from router.sim.state import STATE, Credentials, SimOptions, SimState


def create_app(*, latency: float = 0.0, chunks: int = 3, chunk_delay: float = 0.0, tokens: Iterable[str] = (),
               api_keys: Iterable[str] = ()) -> web.Application:
    """An aiohttp app serving Gemini, OpenAI, Anthropic and Bedrock endpoints with scripted faults, a fake
    OAuth2 token server, and Vertex AI and Azure OpenAI paths accepting the bearer ``tokens`` and Azure
    ``api_keys`` given (and ``sim-*``)."""
    app = web.Application()
    app[STATE] = SimState(SimOptions(latency=latency, chunks=chunks, chunk_delay=chunk_delay),
                          credentials=Credentials(set(tokens), set(api_keys)))
    gemini.add_routes(app)
    openai.add_routes(app)
    anthropic.add_routes(app)
    oauth.add_routes(app)  # a fake OAuth2 token server: /oauth2/token
    bedrock.add_routes(app)
    vertex.add_routes(app)
    azure.add_routes(app)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{tail:.+}", _get_model)
    app.router.add_post("/_sim/faults", _add_faults)
    app.router.add_delete("/_sim/faults", _clear)
    app.router.add_get("/_sim/faults", _pending)
    app.router.add_get("/_sim/requests", _requests)
    app.router.add_post("/_sim/credentials", _add_credentials)
    return app


def _family(request: web.Request) -> str:
    """Which dialect a shared ``GET /v1/models…`` call speaks, judged by its auth headers."""
    headers = request.headers
    if "x-goog-api-key" in headers or "x-goog-api-client" in headers or "key" in request.query:
        return "gemini"
    if "x-api-key" in headers or "anthropic-version" in headers:
        return "anthropic"
    return "openai"


async def _list_models(request: web.Request) -> web.StreamResponse:
    lists = {"gemini": gemini.LIST, "anthropic": anthropic.LIST, "openai": openai.LIST}
    return await serve(request, lists[_family(request)])


async def _get_model(request: web.Request) -> web.StreamResponse:
    endpoint = gemini.GET_MODEL if _family(request) == "gemini" else openai.GET_MODEL
    return await serve(request, endpoint)


def _control_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400, dumps=lambda o: orjson.dumps(o).decode())


def parse_fault_request(body: Any) -> tuple[str, list[Fault]]:
    """``{"key": ..., "faults": [...]}`` -> (key, faults); raises ``ValueError`` when malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("key"), str) or not body["key"]:
        raise ValueError('body must be {"key": "<api key or *>", "faults": [...]}')
    faults = body.get("faults")
    if not isinstance(faults, list):
        raise ValueError("'faults' must be an array")
    return body["key"], [parse_fault(spec) for spec in faults]


async def _add_faults(request: web.Request) -> web.Response:
    try:
        key, faults = parse_fault_request(orjson.loads(await request.read()))
    except (ValueError, orjson.JSONDecodeError) as exc:
        return _control_error(str(exc))
    state = request.app[STATE]
    state.faults.add(key, faults)
    return web.Response(body=orjson.dumps({"queued": state.faults.pending()}),
                        content_type="application/json")


async def _clear(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.Response(body=orjson.dumps({"cleared": True}), content_type="application/json")


async def _pending(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps({"queued": request.app[STATE].faults.pending()}),
                        content_type="application/json")


def parse_credentials(body: Any) -> tuple[list[str], list[str]]:
    """``{"tokens": [...], "api_keys": [...]}`` (either may be left out) -> the two lists."""
    if not isinstance(body, dict):
        raise ValueError("not an object")
    lists = [body.get(name, []) for name in ("tokens", "api_keys")]
    if not all(isinstance(v, list) and all(isinstance(s, str) and s for s in v) for v in lists):
        raise ValueError("not lists of strings")
    return lists[0], lists[1]


async def _add_credentials(request: web.Request) -> web.Response:
    """``{"tokens": [...], "api_keys": [...]}``: more credentials the Vertex and Azure paths accept."""
    try:
        tokens, api_keys = parse_credentials(orjson.loads(await request.read()))
    except (ValueError, orjson.JSONDecodeError):
        return _control_error('body must be {"tokens": ["..."], "api_keys": ["..."]}')
    credentials = request.app[STATE].credentials
    credentials.tokens.update(tokens)
    credentials.api_keys.update(api_keys)
    return web.Response(body=orjson.dumps({"tokens": len(credentials.tokens), "api_keys": len(credentials.api_keys)}),
                        content_type="application/json")


async def _requests(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[STATE].requests()),
                        content_type="application/json")


class SimServer:
    """Run the simulator on 127.0.0.1 for the duration of an ``async with`` block.

    ``port=0`` picks a free port; ``url`` and ``port`` are valid inside the block. ``faults``,
    ``requests`` and ``reset`` reach the app state directly, without an HTTP round trip.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", **options: Any) -> None:
        self.host = host
        self.port = port
        self.app = create_app(**options)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state(self) -> SimState:
        return self.app[STATE]

    @property
    def oauth(self) -> oauth.OAuthState:
        """The fake token server's knobs and counts (router.sim.oauth)."""
        return self.app[oauth.OAUTH]

    def add_faults(self, key: str, *faults: dict[str, Any]) -> None:
        """Queue faults (control-endpoint JSON shapes) for requests made with ``key``."""
        self.state.faults.add(key, [parse_fault(spec) for spec in faults])

    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests()

    def reset(self) -> None:
        self.state.reset()

    async def start(self) -> SimServer:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def run(port: int, host: str = "127.0.0.1", **options: Any) -> None:
    """Serve the simulator until interrupted (``router sim --port N``); uses uvloop if present."""
    web.run_app(create_app(**options), host=host, port=port, loop=new_event_loop(), access_log=None,
                print=lambda *_: print(f"router sim listening on http://{host}:{port}", flush=True))
