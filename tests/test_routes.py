"""router.routes: path templates, methods, 404 vs 405, HEAD on GET routes."""

from __future__ import annotations

import pytest

from router.registry import ENDPOINTS
from router.routes import compile_path, compile_routes

TABLE = compile_routes([
    {"path": "/healthz", "methods": ["GET"], "handler": "health"},
    {"path": "/v1/models", "handler": "models.list"},  # methods default to GET
    {"path": "/v1/models/{model}", "methods": ["GET"], "handler": "models.get"},
    {"path": "/v1/chat/completions", "methods": ["POST"], "handler": "openai.chat"},
    {"path": "/v1beta/models/{model}:generateContent", "methods": ["POST"], "handler": "gemini.generate"},
    {"path": "/v1beta/models/{model}:streamGenerateContent", "methods": ["POST"], "handler": "gemini.stream",
     "params": {"stream": True}},
    {"path": "/files/{rest:path}", "methods": ["GET"], "handler": "health", "auth": "none"},
    {"path": "/both", "methods": ["GET"], "handler": "health"},
    {"path": "/both", "methods": ["DELETE"], "handler": "admin.reload"},
], ENDPOINTS)


@pytest.mark.parametrize(("method", "path", "handler", "params"), [
    ("GET", "/healthz", "health", {}),
    ("HEAD", "/healthz", "health", {}),
    ("GET", "/v1/models", "models.list", {}),
    ("GET", "/v1/models/gpt-4o", "models.get", {"model": "gpt-4o"}),
    ("POST", "/v1/chat/completions", "openai.chat", {}),
    ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", "gemini.generate", {"model": "gemini-2.5-flash"}),
    ("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "gemini.stream", {"model": "gemini-2.5-pro"}),
    ("POST", "/v1beta/models/a:b:generateContent", "gemini.generate", {"model": "a:b"}),
    ("GET", "/files/a/b/c.txt", "health", {"rest": "a/b/c.txt"}),
    ("GET", "/both", "health", {}),
    ("DELETE", "/both", "admin.reload", {}),
], ids=["static", "head-on-get", "default-get", "param", "post", "gemini-generate", "gemini-stream",
        "colon-in-model", "path-param", "same-path-get", "same-path-delete"])
def test_match(method: str, path: str, handler: str, params: dict[str, str]) -> None:
    m = TABLE.match(method, path)
    assert m.route is not None and m.route.handler == handler
    assert m.params == params
    assert m.allowed == frozenset()


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("POST", "/healthz", {"GET", "HEAD"}),
    ("GET", "/v1/chat/completions", {"POST"}),
    ("HEAD", "/v1/chat/completions", {"POST"}),
    ("GET", "/v1beta/models/x:generateContent", {"POST"}),
    ("PUT", "/both", {"GET", "HEAD", "DELETE"}),
], ids=["post-on-get", "get-on-post", "head-on-post", "templated", "two-routes"])
def test_wrong_method_is_405_with_allowed(method: str, path: str, allowed: set[str]) -> None:
    m = TABLE.match(method, path)
    assert m.route is None and m.params == {}
    assert m.allowed == frozenset(allowed)


@pytest.mark.parametrize("path", [
    "/nope", "/v1/chat/completions/", "/v1/models/a/b", "/v1beta/models/:generateContent",
    "/v1beta/models/x:generateContentX", "/healthz/x", "/HEALTHZ", "",
], ids=["unknown", "trailing-slash", "two-segments", "empty-param", "suffix", "deeper", "case", "empty"])
def test_unknown_path_is_404(path: str) -> None:
    m = TABLE.match("GET", path)
    assert m.route is None and m.allowed == frozenset()


def test_route_fields_and_describe() -> None:
    route = TABLE.match("POST", "/v1beta/models/m:streamGenerateContent").route
    assert route is not None and route.params == {"stream": True} and route.auth == "inherit"
    assert TABLE.match("GET", "/files/x").route.auth == "none"  # type: ignore[union-attr]
    assert "POST /v1/chat/completions" in TABLE.describe()
    assert "GET /v1/models/{model}" in TABLE.describe()


def test_first_declared_template_wins() -> None:
    table = compile_routes([
        {"path": "/m/{a}", "methods": ["GET"], "handler": "models.get"},
        {"path": "/m/{b}", "methods": ["GET"], "handler": "health"},
    ], ENDPOINTS)
    m = table.match("GET", "/m/x")
    assert m.route is not None and m.route.handler == "models.get" and m.params == {"a": "x"}


@pytest.mark.parametrize(("path", "regex_is_none"), [
    ("/plain", True), ("/a/{x}", False), ("/a/{x}/{y:path}", False), ("/a.b+c", True),
], ids=["static", "param", "path-param", "regex-chars"])
def test_compile_path(path: str, regex_is_none: bool) -> None:
    assert (compile_path(path) is None) is regex_is_none


def test_literal_regex_characters_are_escaped() -> None:
    table = compile_routes([{"path": "/a.b/{x}", "methods": ["GET"], "handler": "health"}], ENDPOINTS)
    assert table.match("GET", "/a.b/1").route is not None
    assert table.match("GET", "/aXb/1").route is None


@pytest.mark.parametrize(("path", "message"), [
    ("/a/{x}/{x}", "path parameter {x} is used twice"),
    ("/a/{x", "bad path parameter"),
    ("/a/x}", "bad path parameter"),
    ("/a/{1x}", "bad path parameter"),
    ("/a/{x:int}", "bad path parameter"),
], ids=["repeated", "unclosed", "stray-close", "bad-name", "unknown-converter"])
def test_malformed_templates_raise_value_error(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        compile_path(path)
    assert message in str(info.value)


def test_declaration_order_holds_across_segment_buckets() -> None:
    """Templated routes are bucketed by first segment, but the first declared match still wins."""
    table = compile_routes([
        {"path": "/{tenant}/v1/x", "methods": ["GET"], "handler": "health"},
        {"path": "/a/v1/{y}", "methods": ["GET"], "handler": "models.list"},
        {"path": "/b/{y}", "methods": ["GET"], "handler": "models.get"},
    ], ENDPOINTS)
    assert table.match("GET", "/a/v1/x").route.handler == "health"
    assert table.match("GET", "/a/v1/z").route.handler == "models.list"
    assert table.match("GET", "/b/q").route.handler == "models.get"
    assert table.match("GET", "/c/v1/x").params == {"tenant": "c"}
    assert table.match("GET", "/c/nothing").route is None
