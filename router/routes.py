"""The compiled route table: path templates with ``{param}``, methods and the endpoint each runs.

aiohttp's router freezes at start-up, so the gateway runs aiohttp's low-level server with one handler
that dispatches through this table, which a reload swaps with the rest of the snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router.endpoints import Endpoint

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}")


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    methods: frozenset[str]
    endpoint: Endpoint  # what the route's ``handler`` name resolved to in the registry
    auth: str = "inherit"  # inherit | none | required
    params: dict[str, Any] = field(default_factory=dict)
    pattern: re.Pattern[str] | None = None  # None for a static path

    @property
    def handler(self) -> str:
        return self.endpoint.name


@dataclass(frozen=True, slots=True)
class Match:
    route: Route | None
    params: dict[str, str]
    allowed: frozenset[str] = frozenset()  # set when the path exists but the method does not


def compile_path(path: str) -> re.Pattern[str] | None:
    """A regex for a path template, or None when the path has no parameters.

    ``{name}`` captures one segment (no ``/``); ``{name:path}`` captures the rest of the path.
    Raises ValueError for a malformed template (stray brace, bad or repeated parameter name).
    """
    if "{" not in path and "}" not in path:
        return None
    out, pos, names = [], 0, set()
    for m in _PARAM.finditer(path):
        out.append(_literal(path[pos:m.start()]))
        name = m.group(1)
        if name in names:
            raise ValueError(f"path parameter {{{name}}} is used twice in {path}")
        names.add(name)
        out.append(f"(?P<{name}>.+?)" if m.group(2) else f"(?P<{name}>[^/]+?)")
        pos = m.end()
    out.append(_literal(path[pos:]))
    return re.compile("".join(out))


def _literal(text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"bad path parameter near {text!r}: use {{name}} or {{name:path}}")
    return re.escape(text)


def _first_segment(path: str) -> str | None:
    """The first path segment when it is literal (None when it holds a parameter)."""
    seg = path[1:].split("/", 1)[0]
    return None if "{" in seg else seg


class RouteTable:
    """Static paths by dict lookup; templated paths bucketed by their literal first segment and
    tried in declaration order, so matching cost does not grow with unrelated routes."""

    def __init__(self, routes: list[Route]):
        self.routes = routes
        self._static: dict[str, list[Route]] = {}
        self._dynamic: dict[str | None, list[tuple[int, Route]]] = {}
        for i, r in enumerate(routes):
            if r.pattern is None:
                self._static.setdefault(r.path, []).append(r)
            else:
                self._dynamic.setdefault(_first_segment(r.path), []).append((i, r))

    def _candidates(self, path: str) -> list[tuple[int, Route]]:
        own = self._dynamic.get(path[1:].split("/", 1)[0], [])
        loose = self._dynamic.get(None)
        return sorted(own + loose, key=lambda ir: ir[0]) if loose else own

    def match(self, method: str, path: str) -> Match:
        """The route for ``method path``; ``route`` is None for 404 (no ``allowed``) or 405."""
        allowed: set[str] = set()
        for r in self._static.get(path, ()):
            if method in r.methods or (method == "HEAD" and "GET" in r.methods):
                return Match(r, {})
            allowed |= r.methods
        for _, r in self._candidates(path):
            m = r.pattern.fullmatch(path)  # type: ignore[union-attr]  # a dynamic route always has a pattern
            if m is None:
                continue
            if method in r.methods or (method == "HEAD" and "GET" in r.methods):
                return Match(r, m.groupdict())
            allowed |= r.methods
        if "GET" in allowed:
            allowed.add("HEAD")
        return Match(None, {}, frozenset(allowed))

    def describe(self, visible: Callable[[Route], bool] | None = None) -> list[str]:
        """``METHOD path`` for every route (or every ``visible`` one), as listed in 404 messages."""
        return [f"{'|'.join(sorted(r.methods))} {r.path}" for r in self.routes if visible is None or visible(r)]


def compile_routes(entries: list[dict[str, Any]], endpoints: Mapping[str, Endpoint]) -> RouteTable:
    """Resolves each route's ``handler`` name to its endpoint (names were checked against the same
    table when the config was cross-referenced)."""
    routes = [
        Route(
            path=e["path"],
            methods=frozenset(e.get("methods") or ["GET"]),
            endpoint=endpoints[e["handler"]],
            auth=e.get("auth", "inherit"),
            params=dict(e.get("params") or {}),
            pattern=compile_path(e["path"]),
        )
        for e in entries
    ]
    return RouteTable(routes)
