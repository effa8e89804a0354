"""The README is a product surface: its commands and config examples must stay true."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from router.schema import validator

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
YAML_BLOCKS = [b for b in re.findall(r"```yaml\n(.*?)```", README, re.DOTALL)
               if not b.startswith(("# prometheus.yml", "# kubernetes"))]
K8S_BLOCKS = [b for b in re.findall(r"```yaml\n(.*?)```", README, re.DOTALL) if b.startswith("# kubernetes")]
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def test_readme_has_the_two_commands_and_ci_runs_the_second() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.DOTALL)
    assert blocks[0].strip() == "python -m pip install -e . && router serve"
    test_cmd = blocks[1].strip()
    assert test_cmd == "python -m pip install -e '.[test]' && python -m pytest -q"
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def _accounts_take_credentials() -> bool:
    """Whether the schema knows accounts' ``credential:`` (issue 15's credentials core). Until it does,
    the README's blocks using it are held to the rest of the config by tests/test_cloud_templates.py."""
    providers = json.loads((ROOT / "router" / "schemas" / "providers.schema.json").read_text())
    accounts = providers["additionalProperties"]["properties"]["accounts"]["items"]
    return "credential" in accounts.get("properties", {})


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[f"yaml-{i}" for i in range(len(YAML_BLOCKS))])
def test_every_yaml_example_validates(block: str) -> None:
    doc = YAML(typ="safe").load(block)
    if "credential:" in block and not _accounts_take_credentials():
        pytest.skip("accounts' credential: is not in the schema yet (issue 15, credentials core)")
    if doc is None:  # the modeline-only example
        assert "yaml-language-server" in block
        return
    errors = [e.message for e in validator().iter_errors(doc)]
    assert errors == []


def test_readme_sections_cover_every_config_section() -> None:
    root = validator().schema
    for section in root["properties"]:
        assert f"### {section}" in README, f"README documents no '{section}' section"


async def test_client_snippets_run_against_the_gateway(gw) -> None:
    """Every Python snippet of the README, run in order in one namespace, against a live gateway."""
    import asyncio
    import contextlib
    import io

    assert len(PY_BLOCKS) >= 4
    code = "\n".join(PY_BLOCKS).replace("http://127.0.0.1:8045", gw.url)
    out = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README

    await asyncio.to_thread(run)
    assert out.getvalue().count("Echo:") >= 6


def test_readme_performance_numbers_are_the_harness_output() -> None:
    """The tables in the README's performance section are copied from bench/results/latest.md."""
    latest = (ROOT / "bench" / "results" / "latest.md").read_text()
    for heading in ("| target | req/s", "| config | rules"):
        table = latest[latest.index(heading):].split("\n\n", 1)[0].strip()
        assert table in README, f"README table starting {heading!r} differs from bench/results/latest.md"
    assert (ROOT / "bench" / "results" / "latency.png").stat().st_size > 1000
    instructions = (ROOT / "bench" / "results" / "instructions.md").read_text().strip()
    assert instructions in README, "README instructions table differs from bench/results/instructions.md"


def test_the_kubernetes_sketch_carries_a_valid_state_config() -> None:
    assert len(K8S_BLOCKS) == 1
    docs = {d["kind"]: d for d in YAML(typ="safe").load_all(K8S_BLOCKS[0])}
    assert set(docs) == {"ConfigMap", "Deployment", "Service"}
    for name, text in docs["ConfigMap"]["data"].items():
        config = YAML(typ="safe").load(text)
        assert [e.message for e in validator().iter_errors(config)] == [], name
        assert config["state"]["backend"] == "redis"
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert docs["Deployment"]["spec"]["replicas"] > 1
    assert {e["name"] for e in container["env"]} >= {"REDIS_URL"}
    assert container["args"][:3] == ["serve", "--config", container["volumeMounts"][0]["mountPath"]]
