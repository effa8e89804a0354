"""The README's ``credential:`` examples, run: each block served by a real gateway, its token server and
upstream the simulator (the URLs swapped for the simulator's, the variables and files provided)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from router.sim import SimServer
from tests.conftest import ROUTES, start_gateway
from tests.test_credential_google import service_account_key
from tests.test_readme import YAML_BLOCKS

# the token kinds and api_key; aws_sigv4's block is served by tests/test_bedrock_e2e.py (its fake checks signatures)
BLOCKS = [b for b in YAML_BLOCKS if "credential:" in b and "type: aws_sigv4" not in b]
ENV = {"OPENAI_API_KEY": "sk-readme", "GOOGLE_CLIENT_ID": "cid", "GOOGLE_CLIENT_SECRET": "cs", "AZURE_TENANT_ID": "tenant",
       "AZURE_CLIENT_ID": "app", "AZURE_CLIENT_SECRET": "cs"}


def test_the_readme_shows_the_issue_yaml_and_each_oauth2_kind() -> None:
    exact = '''      - email: alice@example.com
        credential: {type: oauth2_refresh_token, token_url: "https://oauth2.googleapis.com/token",
                     client_id: "${GOOGLE_CLIENT_ID}", client_secret: "${GOOGLE_CLIENT_SECRET}",
                     refresh_token: "${file:secrets/alice.refresh}"}'''
    assert any(exact in b for b in BLOCKS)
    for kind in ("api_key", "oauth2_refresh_token", "oauth2_client_credentials"):
        assert any(f"type: {kind}" in b for b in BLOCKS), kind


@pytest.mark.parametrize("block", BLOCKS, ids=[f"credential-{i}" for i in range(len(BLOCKS))])
async def test_a_readme_credential_example_serves_a_request(tmp_path: Path, block: str) -> None:
    async with SimServer(port=0) as sim:
        config = tmp_path / "c"
        config.mkdir()
        for name in ("00-server.yaml", "30-routes.yaml", "50-templates.yaml", "40-retry.yaml"):
            shutil.copy(ROUTES / name, config / name)
        (config / "secrets").mkdir()
        (config / "secrets" / "alice.refresh").write_text("rt-alice\n")
        (config / "secrets" / "sa.json").write_text(service_account_key(f"{sim.url}/oauth2/token"))
        text = re.sub(r'base_url: \S+', f"base_url: {sim.url}", block)
        text = re.sub(r'token_url: "[^"]+"', f'token_url: "{sim.url}/oauth2/token"', text)
        (config / "10-example.yaml").write_text(text)
        provider = re.search(r"^providers:\n  ([\w-]+):", text, re.MULTILINE)
        assert provider is not None
        (config / "20-mapping.yaml").write_text(f"model_mapping: {{default: {provider.group(1)}/some-model}}\n")
        h = await start_gateway(config, env=ENV)
        try:
            status, doc, _ = await h.post_json("/v1/chat/completions",
                                               {"model": "x", "messages": [{"role": "user", "content": "hi"}]})
        finally:
            await h.close()
        assert status == 200, doc
        token_kind = "type: oauth2_" in block or "type: google_service_account" in block
        assert sum(sim.oauth.requests.values()) == (1 if token_kind else 0)
        assert [r["key"] for r in sim.requests()] == ["sim-at-1" if token_kind else "sk-readme"]
