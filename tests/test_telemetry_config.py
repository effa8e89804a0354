"""The ``telemetry:`` section without the SDK: its schema and located errors, the extra it needs, the
YAML beside the ``OTEL_*`` environment variables, the W3C traceparent parser, secrets masked."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from router import telemetry_settings
from router.registry import template_filters
from router.snapshot import check
from router.telemetry import Telemetry, parse_traceparent
from router.telemetry_settings import DEFAULT_ENDPOINTS, TelemetrySettings, compile_telemetry, public, resolve
from tests.conftest import MINIMAL_CONFIG


def errors_of(tmp_path: Path, extra: str) -> list[str]:
    (tmp_path / "00-min.yaml").write_text(MINIMAL_CONFIG)
    (tmp_path / "50-telemetry.yaml").write_text(extra)
    return [str(e) for e in check(tmp_path, template_filters(), env={})]


@pytest.mark.parametrize(("text", "where", "words"), [
    ("telemetry: {sampling_ratio: 2}\n", "50-telemetry.yaml:1:", "2"),
    ("telemetry:\n  otlp: {protocol: http/json}\n", "50-telemetry.yaml:2:", "http/json"),
    ("telemetry:\n  exporter: zipkin\n", "50-telemetry.yaml:2:", "zipkin"),
    ("telemetry:\n  otlp: {endpoint: collector:4318}\n", "50-telemetry.yaml:2:", "expected an http(s):// URL"),
    ("telemetry:\n  otlp: {timeout: soon}\n", "50-telemetry.yaml:2:", "timeout"),
    ("telemetry: {enable: true}\n", "50-telemetry.yaml:1:", "enable"),
])
def test_a_bad_telemetry_section_is_a_located_error(tmp_path: Path, text: str, where: str, words: str) -> None:
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1 and errors[0].startswith(where) and words in errors[0], errors


def test_errors_never_quote_the_otlp_headers_or_endpoint(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, "telemetry:\n  otlp:\n    headers: {x-api-key: [sk-otlp-secret]}\n"
                                 "    endpoint: ftp://user:pw-otlp-secret@collector\n")
    assert len(errors) == 2 and all("value not shown" in e for e in errors)
    assert not [e for e in errors if "otlp-secret" in e]


def test_enabling_it_without_the_extra_is_an_error_naming_the_extra(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a))
    [error] = errors_of(tmp_path, "telemetry:\n  enabled: true\n")
    assert error.startswith("50-telemetry.yaml:2:3:") and "pip install 'declarative-llm-router[otel]'" in error
    assert errors_of(tmp_path, "telemetry: {enabled: false}\n") == []  # off: nothing needed


def test_grpc_without_its_exporter_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if "grpc" in name else (real("json") if "opentelemetry" in name
                                                                       else real(name, *a)))
    [error] = errors_of(tmp_path, "telemetry:\n  enabled: true\n  otlp: {protocol: grpc}\n")
    assert "opentelemetry-exporter-otlp-proto-grpc" in error and "[otel]" in error


def test_the_environment_fills_what_the_yaml_leaves_out() -> None:
    on = TelemetrySettings(enabled=True)
    assert resolve(on, {}).export is not None
    export = resolve(on, {}).export
    assert export is not None and (export.exporter, export.protocol, export.endpoint, export.service_name) == \
        ("otlp", "http/protobuf", DEFAULT_ENDPOINTS["http/protobuf"], "router")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/", "OTEL_SERVICE_NAME": "svc",
           "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=x%3Dy", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
           "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}
    export = resolve(on, env).export
    assert export is not None
    assert export.endpoint == "http://collector:4318/v1/traces" and export.service_name == "svc"
    assert dict(export.headers) == {"a": "1", "b": "2"} and export.timeout == 2.5  # the traces-specific wins
    grpc = resolve(on, {**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}).export
    assert grpc is not None and grpc.endpoint == "http://collector:4318/"  # grpc: the endpoint as given
    traces = resolve(on, {**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}).export
    assert traces is not None and traces.endpoint == "http://t:1/x"  # the signal's own: as is
    assert resolve(on, {"OTEL_TRACES_EXPORTER": "console,otlp"}).export.exporter == "console"  # type: ignore[union-attr]


def test_the_yaml_wins_and_the_kill_switches_win_over_it() -> None:
    yaml = compile_telemetry({"enabled": True, "service_name": "yaml", "exporter": "otlp",
                              "otlp": {"protocol": "grpc", "endpoint": "http://y:4317", "headers": {"k": "v"},
                                       "timeout": "3s"}})
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:1", "OTEL_SERVICE_NAME": "env", "OTEL_TRACES_EXPORTER": "console",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_HEADERS": "e=1"}
    export = resolve(yaml, env).export
    assert export is not None
    assert (export.exporter, export.protocol, export.endpoint, dict(export.headers), export.timeout,
            export.service_name) == ("otlp", "grpc", "http://y:4317", {"k": "v"}, 3.0, "yaml")
    assert resolve(yaml, {"OTEL_SDK_DISABLED": "TRUE"}).export is None
    assert resolve(compile_telemetry({"enabled": True}), {"OTEL_TRACES_EXPORTER": "none"}).export is None
    assert resolve(compile_telemetry({"enabled": True, "exporter": "console"}), {"OTEL_TRACES_EXPORTER": "none"}
                   ).export is not None  # the YAML's exporter wins over the environment's
    assert resolve(compile_telemetry(None), {"OTEL_TRACES_EXPORTER": "otlp"}).export is None  # enabling is the YAML's


def test_admin_view_masks_headers_and_credentials_in_the_endpoint() -> None:
    settings = compile_telemetry({"enabled": True, "otlp": {"endpoint": "https://user:pw@collector:4318/v1/traces?k=s",
                                                             "headers": {"x-api-key": "otlp-secret"}}})
    view = public(settings, resolve(settings, {}))
    assert view["headers"] == {"x-api-key": "***"} and view["endpoint"] == "https://collector:4318/v1/traces"
    assert "otlp-secret" not in str(view) and "pw" not in str(view)
    assert "otlp-secret" not in repr(settings) and "otlp-secret" not in repr(resolve(settings, {}))


def test_an_exporter_the_environment_asks_for_without_its_package_is_a_clear_log_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("router.telemetry.missing_packages", lambda *a: "telemetry needs ...: pip install 'x[otel]'")
    t = Telemetry({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with caplog.at_level(logging.ERROR, "router.telemetry"):
        t.configure(TelemetrySettings(enabled=True))
    assert t.on is False and "[otel]" in caplog.text
    t.configure(TelemetrySettings(enabled=False))
    assert t.on is False and t.public()["enabled"] is False


@pytest.mark.parametrize(("header", "parsed"), [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", (0x4bf92f3577b34da6a3ce929d0e0e4736,
                                                                   0x00f067aa0ba902b7, True)),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", (0x4bf92f3577b34da6a3ce929d0e0e4736,
                                                                   0x00f067aa0ba902b7, False)),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-later", (0x4bf92f3577b34da6a3ce929d0e0e4736,
                                                                         0x00f067aa0ba902b7, True)),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # all-zero trace id
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),  # all-zero parent id
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # version ff
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),  # version 00 has four fields
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),
    ("00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
    ("", None), (None, None),
])
def test_traceparent(header: str | None, parsed: tuple[int, int, bool] | None) -> None:
    assert parse_traceparent(header) == parsed


def test_settings_module_names_the_extra() -> None:
    assert "[otel]" in telemetry_settings.EXTRA
