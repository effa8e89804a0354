"""The shipped Vertex AI and Azure OpenAI templates: rendered with a token or a key, checked field by field,
and sent to the simulator's Vertex and Azure paths, which check the credential and the api-version."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from ruamel.yaml import YAML

from router.client_codecs import anthropic_messages, gemini_native, openai_chat
from router.errors import BadRequest
from router.exchange import ClientHeaders
from router.registry import template_filters
from router.schema import validator
from router.sim import SimServer
from router.snapshot import Provider, Snapshot, build
from router.upstream_request import UpstreamRequest, render_request
from tests.conftest import ROOT, ROUTES

TOKEN = "ya29.a-token-the-sim-knows"
PROVIDERS = """
providers:
  vertex:
    dialect: gemini
    base_url: https://us-east5-aiplatform.googleapis.com
    template: {default: vertex-gemini, gemini: vertex-gemini-passthrough}
    params: {project: proj-1, location: us-east5}
    accounts: [{email: sa@proj-1.iam.gserviceaccount.com}]
  vertex-claude:
    dialect: anthropic
    base_url: https://us-east5-aiplatform.googleapis.com
    template: vertex-anthropic
    params: {project: proj-1, location: us-east5}
    accounts: [{email: sa@proj-1.iam.gserviceaccount.com}]
  azure:
    dialect: openai
    base_url: https://my-resource.openai.azure.com
    template: {default: azure-openai, openai.chat: azure-openai-passthrough}
    params:
      api_version: 2025-01-01-preview
      deployments: {gpt-4o: prod-gpt4o}
    accounts: [{email: azure-key-1, api_key: azure-key-1}]
  azure-plain:
    dialect: openai
    base_url: https://other.openai.azure.com
    template: azure-openai
    accounts: [{email: azure-key-2, api_key: azure-key-2}]
"""


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    config = tmp_path_factory.mktemp("cloud") / "routes.d"
    shutil.copytree(ROUTES, config, ignore=shutil.ignore_patterns("tests"))
    (config / "80-cloud.yaml").write_text(PROVIDERS)
    return build(config, 1, template_filters())[0]


def _render(provider: Provider, request: Any, model: str, account: dict[str, str], base_url: str | None = None,
            template: str | None = None) -> UpstreamRequest:
    ctx = {"request": request, "model": model, "stream": request.stream, "client_headers": ClientHeaders({}),
           "provider": {**provider.template_view, "base_url": base_url or provider.base_url},
           "account": {"email": "e", "id": "e", "api_key": "", **account}}
    chosen = provider.inbound_templates[template] if template else provider.template
    return render_request(chosen, ctx, base_url or provider.base_url)


def _headers(up: UpstreamRequest) -> dict[str, str]:
    return {k: v for k, v in up.headers.items() if k not in ("Content-Type", "User-Agent")}


def _gemini(stream: bool = False) -> Any:
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}], "generationConfig": {"temperature": 0.5}}
    return gemini_native.decode_request(body, {"model": "gemini-2.5-flash", "stream": stream})


def _claude(stream: bool = False) -> Any:
    return anthropic_messages.decode_request({"model": "claude", "max_tokens": 64, "stream": stream, "system": "be",
                                              "messages": [{"role": "user", "content": "hello"}]})


def _chat(stream: bool = False) -> Any:
    return openai_chat.decode_request({"model": "gpt-4o", "stream": stream, "max_tokens": 20,
                                       "messages": [{"role": "user", "content": "hello"}]})


VERTEX = "https://us-east5-aiplatform.googleapis.com/v1/projects/proj-1/locations/us-east5/publishers"


@pytest.mark.parametrize(("stream", "action", "params"), [(False, "generateContent", None),
                                                          (True, "streamGenerateContent", {"alt": "sse"})])
def test_vertex_gemini(snap: Snapshot, stream: bool, action: str, params: Any) -> None:
    up = _render(snap.providers["vertex"], _gemini(stream), "gemini-2.5-flash", {"access_token": TOKEN})
    assert up.url == f"{VERTEX}/google/models/gemini-2.5-flash:{action}" and up.params == params
    assert _headers(up) == {"Authorization": f"Bearer {TOKEN}"}  # never x-goog-api-key on Vertex
    body = orjson.loads(up.body)
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
    assert body["generationConfig"] == {"temperature": 0.5}
    passthrough = _render(snap.providers["vertex"], _gemini(stream), "gemini-2.5-flash", {"access_token": TOKEN},
                          template="gemini")
    assert (passthrough.url, passthrough.params, _headers(passthrough)) == (up.url, up.params, _headers(up))


@pytest.mark.parametrize(("stream", "action"), [(False, "rawPredict"), (True, "streamRawPredict")])
def test_vertex_anthropic(snap: Snapshot, stream: bool, action: str) -> None:
    up = _render(snap.providers["vertex-claude"], _claude(stream), "claude-sonnet-4-5@20250929",
                 {"access_token": TOKEN})
    # the version's "@" is percent-encoded here; aiohttp sends it as "@" (yarl requotes the path)
    assert up.url == f"{VERTEX}/anthropic/models/claude-sonnet-4-5%4020250929:{action}" and up.params is None
    assert _headers(up) == {"Authorization": f"Bearer {TOKEN}"}
    body = orjson.loads(up.body)
    assert "model" not in body and body["anthropic_version"] == "vertex-2023-10-16"
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert body["system"] == "be" and body["max_tokens"] == 64 and body["stream"] is stream


def test_vertex_without_a_token_sends_no_authorization(snap: Snapshot) -> None:
    up = _render(snap.providers["vertex"], _gemini(), "gemini-2.5-flash", {})
    assert _headers(up) == {}


def test_vertex_model_cannot_leave_its_path_segment(snap: Snapshot) -> None:
    up = _render(snap.providers["vertex"], _gemini(), "a/b?c#d", {"access_token": TOKEN})
    assert up.url.endswith("/google/models/a%2Fb%3Fc%23d:generateContent")
    with pytest.raises(BadRequest, match="leave the provider's base_url"):
        _render(snap.providers["vertex"], _gemini(), "../../../../x", {"access_token": TOKEN})


@pytest.mark.parametrize(("account", "headers"), [
    ({"api_key": "azure-key-1"}, {"api-key": "azure-key-1"}),
    ({"access_token": "eyJ-entra"}, {"Authorization": "Bearer eyJ-entra"}),
], ids=["api-key", "entra-id"])
@pytest.mark.parametrize("inbound", [None, "openai.chat"], ids=["canonical", "passthrough"])
def test_azure_openai(snap: Snapshot, account: dict[str, str], headers: dict[str, str], inbound: str | None) -> None:
    up = _render(snap.providers["azure"], _chat(True), "gpt-4o", account, template=inbound)
    assert up.url == "https://my-resource.openai.azure.com/openai/deployments/prod-gpt4o/chat/completions"
    assert up.params == {"api-version": "2025-01-01-preview"}
    assert _headers(up) == headers
    body = orjson.loads(up.body)
    assert body["model"] == "gpt-4o" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_azure_deployment_defaults_to_the_model_and_the_version_to_ga(snap: Snapshot) -> None:
    up = _render(snap.providers["azure"], _chat(), "gpt-4o-mini", {"api_key": "k"})  # not in deployments
    assert up.url.endswith("/openai/deployments/gpt-4o-mini/chat/completions")
    up = _render(snap.providers["azure-plain"], _chat(), "gpt-4.1", {"api_key": "k"})  # no params at all
    assert up.url == "https://other.openai.azure.com/openai/deployments/gpt-4.1/chat/completions"
    assert up.params == {"api-version": "2024-10-21"}


def test_provider_params_reach_templates_and_nothing_else(snap: Snapshot) -> None:
    azure = snap.providers["azure"]
    assert azure.template_view["params"] == {"api_version": "2025-01-01-preview",
                                             "deployments": {"gpt-4o": "prod-gpt4o"}}
    assert snap.providers["azure-plain"].template_view["params"] == {}
    assert "params" not in azure.public()


@pytest.mark.parametrize("params", [
    [1, 2], {"project": ["a"]}, {"deployments": {"a": {"b": "c"}}}, {"bad-name": "x"}, "project=x"])
def test_provider_params_are_schema_checked(params: Any) -> None:
    doc = {"providers": {"p": {"dialect": "openai", "base_url": "http://h", "template": "t", "params": params}}}
    assert list(validator().iter_errors(doc)), params


@pytest.mark.parametrize("name", ["Azure OpenAI", "azure..openai", ".openai", "", 3])
def test_telemetry_name_is_schema_checked(name: Any) -> None:
    doc = {"providers": {"p": {"dialect": "openai", "base_url": "http://h", "template": "t", "telemetry_name": name}}}
    assert list(validator().iter_errors(doc)), name


def test_the_shipped_cloud_examples_name_their_gen_ai_provider() -> None:
    """The commented Vertex and Azure providers in the shipped 10-providers.yaml, uncommented: valid, and
    each names its OpenTelemetry gen_ai.provider.name (their dialects would say gcp.gemini, anthropic, openai)."""
    lines = (ROUTES / "10-providers.yaml").read_text().splitlines()
    start = lines.index("  # vertex:                        # Gemini on Vertex AI, as a service account")
    block = [line.replace("  # ", "  ", 1) for line in lines[start:] if line.startswith("  # ")]
    doc = _without_credentials(YAML(typ="safe").load("providers:\n" + "\n".join(block)))
    assert not list(validator().iter_errors(doc))
    names = {name: p.get("telemetry_name") for name, p in doc["providers"].items()}
    assert names == {"vertex": "gcp.vertex_ai", "vertex-claude": "gcp.vertex_ai", "azure": "azure.ai.openai"}


# -- the rendered requests, sent to the simulator's Vertex and Azure paths ------------------------------

async def _send(up: UpstreamRequest) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.request(up.method, up.url, params=up.params,
                                                             headers=up.headers, data=up.body) as r:
        return r.status, await r.text()


@pytest.mark.parametrize(("provider", "request_of", "model"), [
    ("vertex", _gemini, "gemini-2.5-flash"), ("vertex-claude", _claude, "claude-sonnet-4-5@20250929"),
    ("azure", _chat, "gpt-4o")])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_rendered_requests_are_served_by_the_simulator(snap: Snapshot, provider: str, request_of: Any,
                                                             model: str, stream: bool) -> None:
    async with SimServer(tokens=[TOKEN]) as sim:
        account = {"api_key": "sim-key-azure"} if provider == "azure" else {"access_token": TOKEN}
        up = _render(snap.providers[provider], request_of(stream), model, account, base_url=sim.url)
        status, text = await _send(up)
        assert status == 200, text
        assert ("data: " in text) is stream
        [seen] = sim.requests()
        assert seen["model"] == model and seen["status"] == 200
        if provider == "vertex-claude":
            assert seen["path"].endswith(f"/anthropic/models/{model}:{'streamRawPredict' if stream else 'rawPredict'}")
        if provider == "azure":
            assert seen["path"] == "/openai/deployments/prod-gpt4o/chat/completions"
        # the same request without its credential is refused by the cloud's front end
        up.headers.pop("Authorization", None)
        up.headers.pop("api-key", None)
        assert (await _send(up))[0] == 401


# -- the README's Vertex and Azure examples, with the shipped templates ---------------------------------

def _readme_blocks(word: str) -> list[dict[str, Any]]:
    readme = (ROOT / "README.md").read_text()
    return [YAML(typ="safe").load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if word in b]


def _without_credentials(doc: dict[str, Any]) -> dict[str, Any]:
    """The example with each ``credential:`` account made a static-key one (the credentials core owns
    that schema; here the rest of the example is checked against the shipped templates)."""
    for provider in doc["providers"].values():
        for account in provider.get("accounts", []):
            if account.pop("credential", None) is not None:
                account["api_key"] = "sim-static"
    return doc


@pytest.mark.parametrize(("word", "model", "expected"), [
    ("vertex-anthropic", "claude-sonnet-4-5", "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/"
     "locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5%4020250929:rawPredict"),
    ("vertex-anthropic", "gemini-2.5-pro", "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/"
     "locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"),
    ("azure-openai", "gpt-4o", "https://my-resource.openai.azure.com/openai/deployments/prod-gpt4o/chat/completions"),
])
def test_the_readme_examples_build_and_render(tmp_path: Path, word: str, model: str, expected: str) -> None:
    config = tmp_path / "routes.d"
    shutil.copytree(ROUTES, config, ignore=shutil.ignore_patterns("tests", "20-mapping.yaml"))
    docs = _readme_blocks(word)
    assert docs, word
    exact: dict[str, str] = {}
    for i, doc in enumerate(docs):
        exact.update(doc.pop("model_mapping", {}).get("exact", {}))
        stream = io.StringIO()
        YAML(typ="safe").dump(_without_credentials(doc), stream)
        (config / f"8{i}-readme.yaml").write_text(stream.getvalue())
    (config / "20-mapping.yaml").write_text(orjson.dumps({"model_mapping": {"exact": exact}}).decode())
    snap = build(config, 1, template_filters(), env={"AZURE_OPENAI_API_KEY": "k"})[0]
    provider_name, upstream = exact[model].split("/", 1)
    provider = snap.providers[provider_name]
    request = {"anthropic": _claude, "gemini": _gemini, "openai": _chat}[provider.dialect]()
    assert _render(provider, request, upstream, {"access_token": "t"}).url == expected
