"""router.registry: the one table of families, codecs and endpoints, and what is derived from it.

The JSON Schemas name the provider dialects and the client codecs a provider may give its own
template; both lists must equal the registry's. After adding a codec, regenerate them with
``UPDATE_SCHEMAS=1 python -m pytest tests/test_registry.py``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from router.codecs import family_asking, family_of_path
from router.registry import ENDPOINTS, FAMILIES, UPSTREAM_CODECS, template_filters

SCHEMA = Path(__file__).resolve().parents[1] / "router" / "schemas" / "providers.schema.json"


def _client_codec_names() -> list[str]:
    return list(dict.fromkeys(e.codec.name for e in ENDPOINTS.values() if e.codec is not None))


def _find(doc: Any, key: str) -> Any:
    """The first object under ``doc`` that has ``key`` (the provider definition)."""
    if isinstance(doc, dict):
        if key in doc and isinstance(doc[key], dict) and "dialect" in doc[key]:
            return doc[key]
        for v in doc.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def test_schema_enums_equal_the_registry() -> None:
    doc = json.loads(SCHEMA.read_text())
    props = _find(doc, "properties")
    assert props is not None, "providers.schema.json has no provider properties"
    dialects = props["dialect"]["enum"]
    by_codec = next(a for a in props["template"]["anyOf"] if a.get("type") == "object")["propertyNames"]
    want_dialects, want_templates = list(UPSTREAM_CODECS), ["default", *_client_codec_names()]
    same = set(dialects) == set(want_dialects) and set(by_codec["enum"]) == set(want_templates)
    if os.environ.get("UPDATE_SCHEMAS") and not same:
        props["dialect"]["enum"], by_codec["enum"] = want_dialects, want_templates
        SCHEMA.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    regenerate = "regenerate: UPDATE_SCHEMAS=1 python -m pytest tests/test_registry.py"
    assert set(dialects) == set(want_dialects), regenerate
    assert set(by_codec["enum"]) == set(want_templates), regenerate


def test_every_endpoint_with_a_codec_speaks_its_family() -> None:
    for endpoint in ENDPOINTS.values():
        if endpoint.codec is not None:
            assert endpoint.family is endpoint.codec.family, endpoint.name
    assert {e.family.name for e in ENDPOINTS.values() if e.family} <= {f.name for f in FAMILIES}


def test_codec_names_and_id_prefixes() -> None:
    prefixes = {e.codec.name: e.codec.id_prefix for e in ENDPOINTS.values() if e.codec}
    assert prefixes == {"openai.chat": "chatcmpl-", "openai.completions": "cmpl-", "openai.responses": "resp_",
                        "anthropic.messages": "msg_", "gemini": "", "ollama.chat": "", "ollama.generate": ""}


def test_template_filters_come_from_every_upstream_codec() -> None:
    filters = template_filters()
    for codec in UPSTREAM_CODECS.values():
        assert codec.filters and set(codec.filters) <= set(filters), codec.name


@pytest.mark.parametrize(("path", "headers", "query", "family"), [
    ("/v1/models", {}, {}, "openai"),
    ("/v1/models", {"anthropic-version": "2023-06-01"}, {}, "anthropic"),
    ("/v1/models", {"x-goog-api-key": "k"}, {}, "gemini"),
    ("/v1/models", {}, {"key": "k"}, "gemini"),
    ("/v1beta/models", {}, {}, "gemini"),
    ("/v1/models", {"anthropic-version": "x", "x-goog-api-key": "k"}, {}, "anthropic"),
    ("/api/tags", {}, {}, "ollama"),
])
def test_which_family_asks_for_a_model_list(path: str, headers: dict[str, str], query: dict[str, str],
                                            family: str) -> None:
    assert family_asking(path, headers, query, FAMILIES).name == family


@pytest.mark.parametrize(("path", "family"), [
    ("/nope", "openai"), ("/v1/messages/x", "anthropic"), ("/v1beta/x", "gemini"), ("/v1alpha/x", "gemini"),
    ("/api/pull", "ollama"), ("/api", "openai"),
])
def test_the_family_of_an_unrouted_path(path: str, family: str) -> None:
    assert family_of_path(path, FAMILIES).name == family


def test_ollama_streams_ndjson_and_the_others_sse() -> None:
    media = {e.codec.name: e.codec.stream_media_type for e in ENDPOINTS.values() if e.codec}
    assert media.pop("ollama.chat") == media.pop("ollama.generate") == "application/x-ndjson"
    assert set(media.values()) == {"text/event-stream"}


def test_the_readme_lists_every_handler() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    listed = readme[readme.index("Handlers: `health`"):readme.index("(the table in `router/registry.py`)")]
    assert set(re.findall(r"`([a-z_.]+)`", listed)) == set(ENDPOINTS)
