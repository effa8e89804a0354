"""Azure OpenAI with a static api-key, end to end: the official openai SDK against the gateway, the gateway
against the simulator's Azure path (which checks the deployment URL, the api-version and the api-key)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from tests.conftest import Harness, copy_routes, start_gateway

KEY = "azure-resource-key-1"
AZURE = f"""
providers:
  azure:
    dialect: openai
    base_url: builtin:simulator
    template: {{default: azure-openai, openai.chat: azure-openai-passthrough}}
    params:
      api_version: "2024-10-21"
      deployments: {{gpt-4o: prod-gpt4o}}
    accounts: [{{email: azure-key-1, api_key: {KEY}}}]
  azure-bad-key:
    dialect: openai
    base_url: builtin:simulator
    template: azure-openai
    accounts: [{{email: azure-wrong, api_key: not-the-key}}]
  azure-bad-version:
    dialect: openai
    base_url: builtin:simulator
    template: azure-openai
    params: {{api_version: "2099-01-01"}}
    accounts: [{{email: azure-key-1b, api_key: {KEY}}}]
model_mapping:
  exact:
    azure-gpt-4o: azure/gpt-4o
    azure-mini: azure/gpt-4o-mini
    wrong-key: azure-bad-key/gpt-4o
    wrong-version: azure-bad-version/gpt-4o
"""


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    config = copy_routes(tmp_path / "routes.d")
    (config / "80-azure.yaml").write_text(AZURE)
    harness = await start_gateway(config, sim_options={"api_keys": [KEY]})
    try:
        yield harness
    finally:
        await harness.close()


def _client(h: Harness) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="sk-test", max_retries=0)


async def test_the_openai_sdk_reaches_an_azure_deployment_with_its_key(h: Harness) -> None:
    client = _client(h)
    done = await client.chat.completions.create(model="azure-gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content and done.usage is not None
    stream = await client.chat.completions.create(model="azure-gpt-4o", stream=True,
                                                  messages=[{"role": "user", "content": "hi"}])
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text
    mini = await client.chat.completions.create(model="azure-mini", messages=[{"role": "user", "content": "hi"}])
    assert mini.choices[0].message.content
    seen = await h.sim_requests()
    assert [(r["path"], r["key"], r["status"]) for r in seen] == [
        ("/openai/deployments/prod-gpt4o/chat/completions", KEY, 200),
        ("/openai/deployments/prod-gpt4o/chat/completions", KEY, 200),
        ("/openai/deployments/gpt-4o-mini/chat/completions", KEY, 200)]
    assert seen[1]["body"]["stream_options"] == {"include_usage": True}  # the passthrough asks for usage


@pytest.mark.parametrize(("model", "status"), [("wrong-key", 401), ("wrong-version", 400)])
async def test_azure_refusals_reach_the_client_without_the_key(h: Harness, model: str, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        await _client(h).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == status, err.value  # Azure's message, in the client's API family
    assert ("invalid subscription key" if status == 401 else "API version not supported") in str(err.value.body)
    text = str(err.value.body) + str(err.value)
    assert KEY not in text and "not-the-key" not in text
    [seen] = await h.sim_requests()
    assert seen["status"] == status
