"""LiteLLM proxy as a peer: its own virtualenv (``bench/.venv-litellm``, created on demand), one
worker, one model pointing at the simulator as a ``gemini/`` provider.

Everything here may fail (no network for pip, a LiteLLM release that changed its CLI or its Gemini
URL scheme); callers get a ``LiteLLMUnavailable`` with the reason and carry on without the peer.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from bench.procs import BENCH_DIR, Server, start

VENV = BENCH_DIR / ".venv-litellm"
INSTALL_TIMEOUT = 900.0
UPSTREAM_MODEL = "gemini-2.5-flash"
ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list at start-up
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "DISABLE_SCHEMA_UPDATE": "True",
    # No master key, like the gateway's auth: off; recent releases refuse that unless told it is
    # deliberate (acceptable here: everything listens on 127.0.0.1 for the length of a run).
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}


class LiteLLMUnavailable(RuntimeError):
    """LiteLLM could not be installed, started or pointed at the simulator."""


def _bin(name: str) -> Path:
    return VENV / "bin" / name


def ensure_installed(log: Path) -> Path:
    """The ``litellm`` executable, installing ``litellm[proxy]`` into the venv when missing."""
    exe = _bin("litellm")
    if exe.exists():
        return exe
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(_bin("python")), "-m", "pip", "install", "-q", "litellm[proxy]"]]
    with open(log, "ab") as fh:
        for cmd in steps:
            try:
                code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT,
                                      check=False).returncode
            except subprocess.TimeoutExpired:
                raise LiteLLMUnavailable(f"timed out after {INSTALL_TIMEOUT:.0f}s: {' '.join(cmd)}") from None
            if code != 0:
                raise LiteLLMUnavailable(f"exit {code}: {' '.join(cmd)} (see {log})")
    if not exe.exists():
        raise LiteLLMUnavailable(f"{exe} missing after pip install (see {log})")
    return exe


def version() -> str:
    proc = subprocess.run([str(_bin("python")), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def write_config(work: Path, api_base: str) -> Path:
    """A LiteLLM proxy config: ``gpt-4o`` → ``gemini/gemini-2.5-flash`` at ``api_base``, no auth."""
    config = {
        "model_list": [{"model_name": "gpt-4o", "litellm_params": {
            "model": f"gemini/{UPSTREAM_MODEL}", "api_base": api_base, "api_key": "bench-key"}}],
        "litellm_settings": {"drop_params": True, "telemetry": False, "request_timeout": 600},
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }
    path = work / "litellm-config.json"  # JSON is YAML, and needs no YAML library here
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    return path


def api_base_candidates(sim_url: str) -> list[str]:
    """LiteLLM versions differ on what ``api_base`` means for ``gemini/``: recent ones append
    ``/models/{model}:{endpoint}`` (so the API version belongs in it), older ones only
    ``:{endpoint}`` (so it must name the model). Try them newest first."""
    return [f"{sim_url}/v1beta", f"{sim_url}/v1beta/models/{UPSTREAM_MODEL}"]


def probe(server: Server) -> str | None:
    """None when a chat request through LiteLLM comes back with the simulator's answer, else why not."""
    body = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "probe"}]})
    request = urllib.request.Request(server.url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            reply = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:300]!r}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    content = ((reply.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    return None if content.startswith("Echo:") else f"unexpected reply: {str(reply)[:300]}"


def start_litellm(work: Path, sim_url: str) -> Server:
    """Install if needed, then start LiteLLM with the first ``api_base`` form that reaches the simulator."""
    exe = ensure_installed(work / "litellm-install.log")
    problems = []
    for api_base in api_base_candidates(sim_url):
        config = write_config(work, api_base)
        server = start("litellm", [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", "{port}",
                                   "--num_workers", "1"], work, env=ENV, repo_on_path=False)
        try:
            server.wait_ready("/health/liveliness", timeout=120)
        except RuntimeError as exc:
            server.stop()
            raise LiteLLMUnavailable(f"did not start: {exc}") from None
        problem = probe(server)
        if problem is None:
            return server
        problems.append(f"api_base={api_base}: {problem}")
        server.stop()
        time.sleep(0.5)
    raise LiteLLMUnavailable("cannot reach the simulator through LiteLLM: " + "; ".join(problems))
