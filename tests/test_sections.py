"""router.sections and snapshot.SECTIONS: one table of the config's sections (schema, compile step, cross
references, swap step), the typed sections it compiles to, and the default retry policy written once."""

from __future__ import annotations

import json
from pathlib import Path

from ruamel.yaml import YAML

from router.access_log import AccessLog
from router.codecs import Stores
from router.config import load_dir
from router.registry import template_filters
from router.resources import ROOT_SCHEMA, schema_files
from router.response_store import ResponseStore
from router.retry import DEFAULT_POLICY, Backoff, Policy, Rule, compile_policy
from router.sections import swap_in
from router.signature_memory import SignatureMemory
from router.snapshot import HANDLERS, SECTIONS, Logging, Snapshot, compile_config, cross_reference_errors
from router.state_settings import StateSettings
from router.telemetry import Telemetry
from router.usage import UsageLedger, UsageSettings
from tests.conftest import MINIMAL_CONFIG, ROUTES


def snapshot(tmp_path: Path, extra: str = "") -> Snapshot:
    (tmp_path / "10-config.yaml").write_text(MINIMAL_CONFIG + extra)
    return compile_config(load_dir(tmp_path, {}), 1, template_filters())


def test_the_table_holds_every_top_level_key_of_the_schema_with_its_schema_file() -> None:
    root = json.loads(next(f for f in schema_files() if f.name == ROOT_SCHEMA).read_text())
    refs = {name: prop["$ref"] for name, prop in root["properties"].items()}
    assert {s.name: s.schema for s in SECTIONS} == refs
    assert {s.schema for s in SECTIONS} <= {f.name for f in schema_files()}


def test_a_section_comes_after_the_sections_it_reads() -> None:
    order = [s.name for s in SECTIONS]
    assert order.index("server") < order.index("auth")  # auth mode auto depends on the listener
    assert order.index("retry_policies") < order.index("providers")
    assert order.index("templates") < order.index("providers")


def test_cross_references_take_any_collection_of_handler_names(tmp_path: Path) -> None:
    (tmp_path / "10-config.yaml").write_text(MINIMAL_CONFIG)
    loaded = load_dir(tmp_path, {})
    assert cross_reference_errors(loaded, HANDLERS) == []
    assert cross_reference_errors(loaded, ["openai.chat"]) == []
    [err] = cross_reference_errors(loaded, {"health": None}.keys())
    assert err.pointer == "/routes/0/handler" and "unknown handler 'openai.chat' (known: health)" in err.message


def test_the_default_retry_policy_is_the_shipped_one() -> None:
    shipped = YAML(typ="safe").load((ROUTES / "40-retry.yaml").read_text())["retry_policies"]["default"]
    assert compile_policy("default", shipped) == DEFAULT_POLICY
    written_out = Policy(  # what retry.py wrote out before the shipped file became its source
        name="default", max_attempts=3, max_wait=30.0, rules=(
            Rule(frozenset({429}), rotate=True, wait="retry_after", cooldown="retry_after"),
            Rule(frozenset({500, 502, 504, "connect_error", "timeout", "reset", "malformed"}), rotate=True, wait=0.2),
            Rule(frozenset({503, 529}), rotate=False, backoff=Backoff(1.0, 2.0, 10.0)),
        ), max_cooldown=300.0)
    assert written_out == DEFAULT_POLICY


def test_a_config_without_a_default_policy_retries_like_the_shipped_one(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, "retry_policies:\n  fast: {rules: []}\n")
    assert snap.providers["p"].retry is DEFAULT_POLICY


def test_a_config_may_write_its_own_default_policy(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, "retry_policies:\n  default: {max_attempts: 1, rules: []}\n")
    assert snap.providers["p"].retry == Policy("default", 1, 30.0, ())


def test_logging_is_compiled_to_typed_settings(tmp_path: Path) -> None:
    assert snapshot(tmp_path).logging == Logging("info", "text", True)
    snap = snapshot(tmp_path, "logging: {level: warning, format: json, access_log: false}\n")
    assert snap.logging == Logging("warning", "json", False)


class Live:
    def __init__(self) -> None:
        self.stores = Stores()
        self.access_log = AccessLog()
        self.manage_logging = False
        self.state: StateSettings | None = None
        self.usage = UsageLedger()
        self.telemetry = Telemetry({})

    def use_state(self, settings: StateSettings) -> None:
        self.state = settings


def test_a_swap_sizes_the_stores_and_applies_logging(tmp_path: Path) -> None:
    live = Live()
    swap_in(SECTIONS, live, snapshot(tmp_path, "logging: {format: json, access_log: true}\n"))
    assert (live.access_log.fmt, live.access_log.enabled) == ("json", True)
    assert live.state == StateSettings()  # no state section: memory
    assert live.usage.settings == UsageSettings()  # no usage section: the defaults
    assert live.telemetry.on is False  # no telemetry section: no tracing
    kept = live.stores.responses
    assert isinstance(kept, ResponseStore) and isinstance(live.stores.signatures, SignatureMemory)

    swap_in(SECTIONS, live, snapshot(tmp_path, "server: {response_store: {max_items: 5}}\nlogging: {level: warning}\n"))
    assert live.stores.responses is kept  # resized, not replaced: what it holds survives a reload
    assert live.access_log.enabled is False  # the access log is written at info and debug only

    swap_in(SECTIONS, live, snapshot(tmp_path, "server: {response_store: {max_items: 0}}\n"
                                               "usage: {retention_days: 7}\n"))
    assert live.usage.settings.retention_days == 7  # the ledger (kept across reloads) takes the new bounds
    assert (live.stores.responses, live.stores.signatures) == (None, None)
