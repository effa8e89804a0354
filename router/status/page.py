"""The status page's endpoints: the page itself (``status.page``, ``status.asset``) and its data
(``admin.status``).

The page and its script and stylesheet hold no data, so they are served to anyone (its route says
``auth: none``): a browser opening ``/status`` without credentials gets a form asking for the admin
key, never a blank 401. The script keeps the key in sessionStorage and polls ``GET /admin/status``
with it as a Bearer token, like any admin call; that endpoint is where the admin key is checked.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from aiohttp import web

from router.endpoints import json_response
from router.errors import GatewayError
from router.status.replicas import shared_exports
from router.status.view import local_exports, status_view

if TYPE_CHECKING:
    from router.endpoints import Params, Services
    from router.exchange import Exchange

ASSETS = {"status.js": "text/javascript", "status.css": "text/css"}  # the only files /status/{asset} serves
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # no third-party code, no inline script or style: the page loads only its own two files
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static(name: str) -> bytes:
    return files("router.status").joinpath("static", name).read_bytes()


async def status_page(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8",
                        headers=PAGE_HEADERS)


async def status_asset(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    name = str(params.get("asset", ""))
    kind = ASSETS.get(name)
    if kind is None:
        raise GatewayError("not_found", f"no status page file '{name}'")
    return web.Response(body=_static(name), content_type=kind, charset="utf-8", headers=PAGE_HEADERS)


def _listen(request: web.BaseRequest) -> str:
    """The address this request came in on (the socket the gateway listens on, as the page reached it)."""
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if isinstance(sock, tuple) and len(sock) >= 2:
        host = str(sock[0])
        return f"[{host}]:{sock[1]}" if ":" in host else f"{host}:{sock[1]}"
    return str(sock or "")


async def admin_status(svc: Services, x: Exchange, request: web.BaseRequest, params: Params) -> web.Response:
    gw, traffic = svc.gateway, svc.metrics.traffic
    exports = await shared_exports(gw, traffic) or local_exports(gw, traffic)
    resp = json_response(status_view(gw, exports, _listen(request)))
    resp.headers["Cache-Control"] = "no-store"
    return resp
