"""Hostile and broken client input: every refusal is an error in the caller's own dialect, never a 500
crash, and nothing a client sends can move the upstream request out of the provider's base_url,
inject a header or reach Python internals through a template."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson
from aiohttp import web
from ruamel.yaml import YAML

from router.errors import ConfigErrors
from tests.conftest import ROUTES, Harness, start_gateway

USER_MSG = [{"role": "user", "content": "hi"}]
GEMINI_CONTENTS = [{"role": "user", "parts": [{"text": "hi"}]}]

# dialect -> (path, error style, a valid body)
DIALECTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "openai.chat": ("/v1/chat/completions", "openai", {"model": "gpt-4o", "messages": USER_MSG}),
    "openai.completions": ("/v1/completions", "openai", {"model": "gpt-4o", "prompt": "hi"}),
    "openai.responses": ("/v1/responses", "openai", {"model": "gpt-4o", "input": "hi"}),
    "anthropic.messages": ("/v1/messages", "anthropic", {"model": "gpt-4o", "max_tokens": 50, "messages": USER_MSG}),
    "gemini": ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini", {"contents": GEMINI_CONTENTS}),
    "ollama.chat": ("/api/chat", "ollama", {"model": "gpt-4o", "messages": USER_MSG, "stream": False}),
    "ollama.generate": ("/api/generate", "ollama", {"model": "gpt-4o", "prompt": "hi", "stream": False}),
}


def post_routes() -> list[tuple[str, str, str]]:
    """(path, handler, error style) for every POST route the shipped routes.d declares."""
    doc = YAML(typ="safe").load((ROUTES / "30-routes.yaml").read_text())
    out = []
    for r in doc["routes"]:
        if "POST" not in r.get("methods", []) or r["handler"].startswith("admin."):
            continue
        family = r["handler"].split(".", 1)[0]
        out.append((r["path"].replace("{model}", "gemini-2.5-flash"), r["handler"], family))
    assert len(out) >= 10
    return out


POST_ROUTES = post_routes()


def body_for(handler: str) -> dict[str, Any]:
    family = handler.split(".", 1)[0]
    if family == "gemini":
        return {"contents": GEMINI_CONTENTS}
    if family == "anthropic":
        return DIALECTS["anthropic.messages"][2]
    if family == "ollama":
        return DIALECTS[handler][2] if handler in DIALECTS else {"model": "gpt-4o"}  # /api/show
    if handler == "openai.completions":
        return DIALECTS["openai.completions"][2]
    if handler == "openai.responses":
        return DIALECTS["openai.responses"][2]
    return DIALECTS["openai.chat"][2]


def assert_dialect_error(style: str, status: int, doc: Any) -> str:
    """The error body has the caller's dialect shape; returns its message."""
    assert isinstance(doc, dict), doc
    if style == "ollama":  # the message alone
        assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], doc
        return str(doc["error"])
    if style == "anthropic":
        assert doc.get("type") == "error", doc
        err = doc["error"]
        assert isinstance(err.get("type"), str) and err["type"], doc
    elif style == "gemini":
        err = doc["error"]
        assert err.get("code") == status and isinstance(err.get("status"), str) and err["status"], doc
    else:
        err = doc["error"]
        assert isinstance(err.get("type"), str) and err["type"] and "param" in err and "code" in err, doc
    assert isinstance(err.get("message"), str) and err["message"], doc
    return err["message"]


async def post_raw(h: Harness, path: str, data: Any, **kw: Any) -> tuple[int, Any, bytes]:
    async with h.session.post(h.url + path, data=data, **kw) as r:
        raw = await r.read()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        return r.status, doc, raw


# --- 413 ------------------------------------------------------------------------------------------


async def test_body_over_max_body_bytes_is_413_on_every_dialect_route(config_dir: Path) -> None:
    (config_dir / "00-server.yaml").write_text("server: {max_body_bytes: 2000}\n")
    h = await start_gateway(config_dir)
    try:
        for path, handler, style in POST_ROUTES:
            body = orjson.dumps({**body_for(handler), "padding": "x" * 3000})

            async def chunks(body: bytes = body) -> AsyncIterator[bytes]:
                for i in range(0, len(body), 500):
                    yield body[i:i + 500]

            for how, data in (("content-length", body), ("chunked", chunks())):
                status, doc, raw = await post_raw(h, path, data, headers={"Content-Type": "application/json"})
                assert status == 413, (path, how, raw[:300])
                assert_dialect_error(style, status, doc)
                if style == "anthropic":
                    assert doc["error"]["type"] == "request_too_large", doc
            # the same route still serves a body under the limit
            status, doc, raw = await post_raw(h, path, orjson.dumps(body_for(handler)),
                                              headers={"Content-Type": "application/json"})
            assert status == 200, (path, raw[:300])
        assert all(r["status"] == 200 for r in await h.sim_requests())
    finally:
        await h.close()


# --- invalid JSON ------------------------------------------------------------------------------------


async def test_invalid_json_is_400_on_every_dialect_route(gw: Harness) -> None:
    for path, _, style in POST_ROUTES:
        for data in (b"{not json", b'{"model": "gpt-4o",', b"\xff\xfe\x00", b"", b"   "):
            status, doc, raw = await post_raw(gw, path, data, headers={"Content-Type": "application/json"})
            assert status == 400, (path, data, raw[:300])
            assert_dialect_error(style, status, doc)
    assert await gw.sim_requests() == []


# --- wrong types and missing fields: 400 naming the field ---------------------------------------------


def _named(doc: Any, field: str) -> bool:
    err = doc["error"]
    if isinstance(err, str):  # Ollama's: the message names the field
        return field in err
    return field in (err.get("param") or "") or field in err["message"]


WRONG_TYPES = [
    ("openai.chat", {"messages": "x"}, "messages"),
    ("openai.chat", {"temperature": "hot"}, "temperature"),
    ("openai.chat", {"max_tokens": -1}, "max_tokens"),
    ("openai.chat", {"model": 5}, "model"),
    ("openai.chat", {"stream": "yes"}, "stream"),
    ("openai.chat", {"tools": "all"}, "tools"),
    ("openai.completions", {"prompt": 5}, "prompt"),
    ("openai.completions", {"temperature": "hot"}, "temperature"),
    ("openai.completions", {"max_tokens": -1}, "max_tokens"),
    ("openai.responses", {"input": 5}, "input"),
    ("openai.responses", {"temperature": "hot"}, "temperature"),
    ("openai.responses", {"max_output_tokens": -1}, "max_output_tokens"),
    ("anthropic.messages", {"messages": "x"}, "messages"),
    ("anthropic.messages", {"temperature": "hot"}, "temperature"),
    ("anthropic.messages", {"max_tokens": -1}, "max_tokens"),
    ("anthropic.messages", {"system": 5}, "system"),
    ("gemini", {"contents": 5}, "contents"),
    ("gemini", {"generationConfig": {"temperature": "hot"}}, "temperature"),
    ("gemini", {"generationConfig": {"maxOutputTokens": -1}}, "maxOutputTokens"),
    ("gemini", {"generationConfig": "x"}, "generationConfig"),
    ("ollama.chat", {"messages": "x"}, "messages"),
    ("ollama.chat", {"options": {"temperature": "hot"}}, "options.temperature"),
    ("ollama.chat", {"format": 5}, "format"),
    ("ollama.generate", {"prompt": 5}, "prompt"),
    ("ollama.generate", {"stream": "yes"}, "stream"),
    ("ollama.generate", {"options": {"num_predict": "x"}}, "options.num_predict"),
]


async def test_wrong_types_are_400_naming_the_field(gw: Harness) -> None:
    for dialect, patch, field in WRONG_TYPES:
        path, style, valid = DIALECTS[dialect]
        status, doc, _ = await gw.post_json(path, {**valid, **patch})
        assert status == 400, (dialect, patch, doc)
        assert_dialect_error(style, status, doc)
        assert _named(doc, field), (dialect, patch, doc)
    assert await gw.sim_requests() == []


MISSING = [
    ("openai.chat", "model"), ("openai.chat", "messages"),
    ("openai.completions", "model"), ("openai.completions", "prompt"),
    ("openai.responses", "model"),
    ("anthropic.messages", "model"), ("anthropic.messages", "max_tokens"), ("anthropic.messages", "messages"),
    ("gemini", "contents"),
    ("ollama.chat", "model"), ("ollama.generate", "model"),  # no messages or prompt: a load (test_conformance_ollama)
]


async def test_missing_fields_are_400_naming_the_field(gw: Harness) -> None:
    for dialect, field in MISSING:
        path, style, valid = DIALECTS[dialect]
        body = {k: v for k, v in valid.items() if k != field}
        status, doc, _ = await gw.post_json(path, body)
        assert status == 400, (dialect, field, doc)
        assert_dialect_error(style, status, doc)
        assert _named(doc, field), (dialect, field, doc)
    assert await gw.sim_requests() == []


# --- model names cannot move the upstream request ------------------------------------------------------

EVIL_MODELS = ["../../v1/evil", "a/b", "x?alt=1", "y#z", "a%2Fb", "..", ".", "%2E%2E", "..%2F..%2Fx",
               "a/../../b", "x\\..\\y", "m:generateContent?key=k", "?", "#"]
# a Gemini path carries "model:method"; the gateway splits at the first ':' (so "m:x?k" is model "m")
ARRIVED = set(EVIL_MODELS) | {n.partition(":")[0] for n in EVIL_MODELS}


class Recorder:
    """A stand-in upstream under a path prefix that records the raw request line of every call."""

    PREFIX = "/up"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (raw path, raw query)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.rel_url.raw_path, request.rel_url.raw_query_string))
        return web.json_response({"candidates": [{"index": 0, "finishReason": "STOP", "content": {
            "role": "model", "parts": [{"text": "ok"}]}}]})

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}{self.PREFIX}"


def _request(dialect: str, model: str) -> tuple[str, dict[str, Any]]:
    path, _, valid = DIALECTS[dialect]
    if dialect == "gemini":
        return f"/v1beta/models/{quote(model, safe='')}:generateContent", valid
    return path, {**valid, "model": model}


async def test_model_names_cannot_leave_the_base_url(config_dir: Path) -> None:
    recorder = Recorder()
    base = await recorder.start()
    # every unmapped name goes to the gemini provider (the simulator) as is; rec-<name> to the recorder
    (config_dir / "25-passthrough.yaml").write_text(
        "providers:\n"
        f"  rec: {{dialect: gemini, base_url: \"{base}\", template: gemini,\n"
        "        accounts: [{email: rec@local, api_key: rec-key}]}\n"
        "model_mapping:\n  wildcard:\n    \"*\": gemini/*\n    \"rec-*\": rec/*\n")
    h = await start_gateway(config_dir)
    try:
        accepted = 0  # names served through the recorder
        for dialect, (_, style, _) in DIALECTS.items():
            for name in EVIL_MODELS:
                for model in (name, "rec-" + name):
                    path, body = _request(dialect, model)
                    status, doc, raw = await post_raw(h, path, orjson.dumps(body),
                                                      headers={"Content-Type": "application/json"})
                    if status != 200:  # refused by the gateway: in the caller's dialect
                        assert 400 <= status < 600, (dialect, model, raw[:300])
                        assert_dialect_error(style, status, doc)
                    elif model.startswith("rec-"):
                        accepted += 1
        # what the simulator received: its model route, with the whole name as the model
        for r in await h.sim_requests():
            assert r["path"].startswith("/v1beta/models/"), r
            assert r["model"] in ARRIVED, r
            assert r["path"] == f"/v1beta/models/{r['model']}:generateContent", r  # (path is decoded)
        # what the recorder received, raw: one encoded path segment under the prefix, no query
        assert recorder.seen, "no name reached the recording upstream"
        for raw_path, query in recorder.seen:
            assert raw_path.startswith(Recorder.PREFIX + "/v1beta/models/"), raw_path
            segment, sep, action = raw_path[len(Recorder.PREFIX + "/v1beta/models/"):].rpartition(":")
            assert sep and action == "generateContent", raw_path
            assert "/" not in segment and "?" not in segment and "#" not in segment, raw_path
            assert unquote(segment) in ARRIVED, raw_path  # the name arrived whole, encoded once
            assert query == "", (raw_path, query)
        # a name the gateway accepted reached the upstream: nothing was silently dropped
        assert accepted == len(recorder.seen)
    finally:
        await h.close()
        await recorder.runner.cleanup()


# --- header injection through a template ---------------------------------------------------------------

HEADER_CONFIG = """
templates:
  with-user-header:
    method: POST
    url: "{{ provider.base_url }}/v1beta/models/{{ model | path_segment }}:{{ 'streamGenerateContent' if stream else 'generateContent' }}"
    query: {alt: "{{ 'sse' if stream else none }}"}
    headers: {x-goog-api-key: "{{ account.api_key }}", x-end-user: "{{ request.user }}"}
    body:
      contents: "{{ request.messages | gemini_contents }}"
providers:
  hdr:
    dialect: gemini
    base_url: builtin:simulator
    template: with-user-header
    accounts: [{email: hdr@simulator.local, api_key: sim-key-a}]
model_mapping:
  exact: {hdr-model: hdr/gemini-2.5-flash}
"""


def _with_user(dialect: str, user: str, stream: bool = False) -> tuple[str, str, dict[str, Any]]:
    path, style, valid = DIALECTS[dialect]
    body = {**valid, "model": "hdr-model", "stream": stream}
    if dialect == "anthropic.messages":
        body["metadata"] = {"user_id": user}
    else:
        body["user"] = user
    return path, style, body


USER_DIALECTS = ["openai.chat", "openai.completions", "openai.responses", "anthropic.messages"]


async def test_header_template_rendering_crlf_is_refused(config_dir: Path) -> None:
    (config_dir / "70-header.yaml").write_text(HEADER_CONFIG)
    h = await start_gateway(config_dir)
    try:
        for dialect in USER_DIALECTS:
            path, style, body = _with_user(dialect, "alice")
            status, doc, _ = await h.post_json(path, body)  # the template itself works
            assert status == 200, (dialect, doc)
        assert len(await h.sim_requests()) == len(USER_DIALECTS)
        await h.sim_reset()
        for dialect in USER_DIALECTS:
            for user in ("a\r\nX-Evil: 1", "a\nX-Evil: 1", "a\rX-Evil: 1", "a\x00b"):
                for stream in (False, True):
                    path, style, body = _with_user(dialect, user, stream)
                    status, doc, raw = await post_raw(h, path, orjson.dumps(body),
                                                      headers={"Content-Type": "application/json"})
                    assert status in (400, 500), (dialect, user, stream, raw[:300])
                    assert_dialect_error(style, status, doc)
        assert await h.sim_requests() == []
    finally:
        await h.close()


# --- templates cannot reach Python internals --------------------------------------------------------------

PROBES = [
    "{{ request.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__ }}",
    "{{ request | attr('__class__') }}",
    "{{ '{0.__class__}'.format(request) }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ request.raw.__class__ }}",
    "{{ request.messages.__class__.__base__.__subclasses__() }}",
    "text {{ ''.__class__ }} and {{ request.__class__.__mro__ }}",
    "{{ range.__self__ }}",
    "{{ provider.__class__ }}",
]
LEAKS = ("<class", "<module", "<function", "<built-in", "<bound", "<method", "__builtins__", "Popen")


def _probe_config() -> str:
    lines = ["templates:"]
    for i, probe in enumerate(PROBES):
        lines += [
            f"  probe-{i}:",
            "    method: POST",
            "    url: \"{{ provider.base_url }}/v1beta/models/{{ model | path_segment }}:generateContent\"",
            "    headers: {x-goog-api-key: \"{{ account.api_key }}\"}",
            "    body:",
            "      contents: \"{{ request.messages | gemini_contents }}\"",
            f"      probe: {orjson.dumps(probe).decode()}",
            f"      nested: {{deep: [{orjson.dumps(probe).decode()}]}}",
        ]
    lines.append("providers:")
    for i in range(len(PROBES)):
        lines.append(f"  probe-{i}: {{dialect: gemini, base_url: builtin:simulator, template: probe-{i},"
                     f" accounts: [{{email: p{i}@simulator.local, api_key: sim-key-a}}]}}")
    lines += ["model_mapping:", "  exact:"]
    lines += [f"    probe-model-{i}: probe-{i}/gemini-2.5-flash" for i in range(len(PROBES))]
    return "\n".join(lines) + "\n"


async def test_templates_cannot_reach_python_internals(config_dir: Path) -> None:
    (config_dir / "70-probes.yaml").write_text(_probe_config())
    try:
        h = await start_gateway(config_dir)
    except ConfigErrors as e:  # refusing such templates at load time is fine too
        assert all("/templates/" in (err.pointer or "") for err in e.errors), e
        return
    try:
        for i, probe in enumerate(PROBES):
            await h.sim_reset()
            status, doc, raw = await post_raw(h, "/v1/chat/completions", orjson.dumps(
                {"model": f"probe-model-{i}", "messages": USER_MSG}), headers={"Content-Type": "application/json"})
            text = raw.decode("utf-8", "replace")
            assert not any(leak in text for leak in LEAKS), (probe, text[:300])
            seen = await h.sim_requests()
            if status == 200:
                assert len(seen) == 1, (probe, seen)
            else:  # rendering refused: a dialect-shaped error and nothing sent upstream
                assert status >= 400, (probe, text[:300])
                assert_dialect_error("openai", status, doc)
                assert seen == [], (probe, seen)
            for r in seen:
                sent = orjson.dumps(r["body"]).decode()
                assert not any(leak in sent for leak in LEAKS), (probe, sent[:500])
    finally:
        await h.close()
