"""SSE framing, reading upstream errors, Retry-After, and safe request rendering (sse, failures, upstream_request)."""

from __future__ import annotations

import email.utils
import time
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from router.errors import GatewayError
from router.failures import HUGE_DELAY, UpstreamFailure, retry_after_seconds
from router.registry import template_filters
from router.snapshot import Template
from router.sse import EventTooLarge, SSEParser
from router.templates import compile_tree, make_environment
from router.upstream_codecs import anthropic, gemini, openai
from router.upstream_request import USER_AGENT, _inside, render_request

Events = list[tuple[str | None, bytes]]
# The openai codec reads every error body below: OpenAI's, the bare forms OpenAI-compatible servers send,
# and Gemini's, which Google's OpenAI-compatible endpoint sends (in an array, with google.rpc details).
parse_failure = openai.CODEC.parse_failure


def parse(*chunks: bytes) -> Events:
    p = SSEParser()
    out: Events = []
    for c in chunks:
        out += p.feed(c)
    return out + p.close()


@pytest.mark.parametrize(("stream", "events"), [
    (b"data: {\"a\":1}\n\n", [(None, b'{"a":1}')]),
    (b"data: one\r\n\r\ndata: two\r\n\r\n", [(None, b"one"), (None, b"two")]),
    (b"data: a\r\n\ndata: b\n\r\n", [(None, b"a"), (None, b"b")]),
    (b"data: line1\ndata: line2\n\n", [(None, b"line1\nline2")]),
    (b"event: message_start\ndata: {}\n\nevent: ping\ndata: {}\n\n", [("message_start", b"{}"), ("ping", b"{}")]),
    (b": keep-alive\n\ndata: x\n\n", [(None, b"x")]),
    (b":comment\ndata: x\n: another\n\n", [(None, b"x")]),
    (b"data:nospace\n\n", [(None, b"nospace")]),
    (b"data:  two spaces\n\n", [(None, b" two spaces")]),
    (b"event: only\n\ndata: x\n\n", [(None, b"x")]),
    (b"id: 7\nretry: 100\ndata: x\n\n", [(None, b"x")]),
    (b"data\ndata: x\n\n", [(None, b"\nx")]),
    (b"data: [DONE]\n\n", [(None, b"[DONE]")]),
    (b"data: tail-without-blank-line", [(None, b"tail-without-blank-line")]),
    (b"data: tail\n", [(None, b"tail")]),
    (b"", []),
    (b"\n\n\n", []),
], ids=["lf", "crlf", "mixed", "multi-line", "named-events", "comment-block", "comments-inline", "no-space",
        "one-space-removed", "event-without-data", "id-retry-ignored", "bare-data-field", "done", "no-final-newline",
        "no-final-blank", "empty", "blank-lines"])
def test_sse_framing(stream: bytes, events: Events) -> None:
    assert parse(stream) == events


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=4), crlf=st.booleans(), data=st.data())
def test_sse_long_lines_in_random_pieces(sizes: list[int], crlf: bool, data: st.DataObject) -> None:
    """Lines past LONG_LINE take the piecewise path: the events stay the same however the reads fall."""
    nl = b"\r\n" if crlf else b"\n"
    payloads = [bytes([97 + i]) * n for i, n in enumerate(sizes)]
    stream = b"".join(b"event: e\ndata: " + p + nl + nl for p in payloads)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    points = sorted(set(cuts))
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert parse(*chunks) == [("e", p) for p in payloads]


def test_sse_event_limit() -> None:
    """One event may hold ``limit`` bytes; more is a ValueError (the engine's ``malformed``), whether
    it arrives as one long line, as many data lines, or as a line completed by a later chunk."""
    line = b"data: " + b"x" * 994 + b"\n\n"  # 1002 bytes: a whole event
    assert parse(line * 50) == [(None, b"x" * 994)] * 50  # the limit is per event, not per stream
    p = SSEParser(limit=1100)  # 1002 bytes and a piece held across reads (LINE_COST)
    assert p.feed(line[:300]) + p.feed(line[300:700]) + p.feed(line[700:]) == [(None, b"x" * 994)]
    p = SSEParser(limit=1001)
    p.feed(line[:300])
    with pytest.raises(ValueError, match=r"larger than 1001 bytes \(server.upstream_limits.max_event_bytes\)"):
        p.feed(line[300:1001])  # what is held between reads is bounded
    p = SSEParser(limit=1000)
    p.feed(b"data: ")
    with pytest.raises(EventTooLarge):  # a line that never ends, fed piece by piece
        for _ in range(100):
            p.feed(b"x" * 64)
    p = SSEParser(limit=5000)
    p.feed(b"data: " + b"x" * 2000)
    with pytest.raises(EventTooLarge):  # a long line completed by a chunk that takes it over the limit
        p.feed(b"x" * 3500 + b"\n\n")
    p = SSEParser(limit=10_000)
    with pytest.raises(EventTooLarge):  # empty data lines hold a list slot each: they count
        for _ in range(100):
            p.feed(b"data:\n" * 10)
    p = SSEParser(limit=10_000)
    for _ in range(1000):  # comments and blank lines end nothing but hold nothing either
        assert p.feed(b": ping\n\n") == []


def test_sse_long_line_costs_linear_time() -> None:
    """A 32 MiB line in 16 KiB chunks: each chunk is searched once and the line joined once (the old
    parser copied and rescanned the whole pending line per chunk: ~32 GiB of copying)."""
    p = SSEParser(limit=64 * 1024 * 1024)
    piece = b"y" * 16384
    t0 = time.perf_counter()
    assert p.feed(b"data: ") == []
    for _ in range(2048):
        assert p.feed(piece) == []
    events = p.feed(b"\n\n")
    elapsed = time.perf_counter() - t0
    assert len(events) == 1 and len(events[0][1]) == 2048 * 16384
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_sse_event_name_resets_after_each_event() -> None:
    assert parse(b"event: a\ndata: 1\n\ndata: 2\n\n") == [("a", b"1"), (None, b"2")]


def test_sse_crlf_split_between_chunks() -> None:
    assert parse(b"data: a\r", b"\n\r", b"\ndata: b\r\n", b"\r\n") == [(None, b"a"), (None, b"b")]


SAMPLE = (b"event: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n"
          b": ping\n\ndata: {\"text\":\"h\xc3\xa9llo\"}\n\n"
          b"data: part1\ndata: part2\r\n\n"
          b"event: done\ndata: [DONE]\n\n")


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, len(SAMPLE)), max_size=12))
def test_sse_random_chunk_boundaries_give_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [SAMPLE[a:b] for a, b in zip([0, *points], [*points, len(SAMPLE)])]
    assert parse(*chunks) == parse(SAMPLE) == [
        ("message_start", b'{"type":"message_start"}'), (None, '{"text":"héllo"}'.encode()),
        (None, b"part1\npart2"), ("done", b"[DONE]")]


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b),
                         min_size=1, max_size=5),
       crlf=st.booleans(), data=st.data())
def test_sse_round_trips_random_payloads(payloads: list[bytes], crlf: bool, data: st.DataObject) -> None:
    nl = b"\r\n" if crlf else b"\n"
    stream = b"".join(b"data: " + p + nl + nl for p in payloads)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    points = sorted(set(cuts))
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert parse(*chunks) == [(None, p) for p in payloads]


# --- upstream error bodies ------------------------------------------------------------------------------

GEMINI_429 = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                        "status": "RESOURCE_EXHAUSTED", "details": [
                            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                             "violations": [{"quotaMetric": "generate_content_free_tier_requests"}]},
                            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]}}


@pytest.mark.parametrize(("status", "headers", "body", "message", "retry_after", "model_scoped"), [
    (429, {}, {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "code": "rate_limit_exceeded"}},
     "Rate limit reached for gpt-4o", None, False),
    (529, {}, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     "Overloaded", None, False),
    (429, {}, GEMINI_429, "Resource has been exhausted (e.g. check quota).", 12.0, True),
    (429, {}, [GEMINI_429], "Resource has been exhausted (e.g. check quota).", 12.0, True),
    (503, {}, {"error": {"code": 503, "message": "busy", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}, "busy", 1.5, False),
    (429, {"Retry-After": "3"}, GEMINI_429, "Resource has been exhausted (e.g. check quota).", 3.0, True),
    (429, {"retry-after-ms": "250"}, {"error": {"message": "slow down"}}, "slow down", 0.25, False),
    (502, {}, b"<html>Bad Gateway</html>", "upstream returned HTTP 502", None, False),
    (500, {}, b"", "upstream returned HTTP 500", None, False),
    (400, {}, {"error": "plain string error"}, "plain string error", None, False),
    (422, {}, {"message": "top-level message"}, "top-level message", None, False),
    (500, {}, {"error": {"message": "", "details": 5}}, "upstream returned HTTP 500", None, False),
    (500, {}, {"error": {"details": ["x", {"@type": "RetryInfo", "retryDelay": "soon"}]}},
     "upstream returned HTTP 500", None, False),
], ids=["openai", "anthropic", "gemini-retryinfo-quota", "gemini-array", "gemini-fractional-delay",
        "header-beats-retryinfo", "retry-after-ms", "html", "empty", "string-error", "top-level-message",
        "odd-details", "bad-retry-delay"])
def test_parse_failure(status: int, headers: dict[str, str], body: Any, message: str, retry_after: float | None,
                       model_scoped: bool) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    f = parse_failure(status, CIMultiDict(headers), raw)
    assert (f.outcome, f.status, f.message, f.retry_after, f.model_scoped) == (
        status, status, message, retry_after, model_scoped)


def test_parse_failure_redacts_secrets() -> None:
    body = orjson.dumps({"error": {"message": "API key AIzaSECRET123 not valid; key=AIzaSECRET123"}})
    f = parse_failure(400, {}, body, secrets=("AIzaSECRET123", ""))
    assert f.message == "API key *** not valid; key=***"


def test_parse_failure_redacts_before_truncating() -> None:
    secret = "sk-" + "s" * 40
    body = orjson.dumps({"error": {"message": "x" * 980 + secret}})
    f = parse_failure(401, {}, body, secrets=(secret,))
    assert "sk-" not in f.message and "sss" not in f.message and len(f.message) <= 1000


@pytest.mark.parametrize(("outcome", "status"), [("timeout", 504), ("connect_error", 502), ("reset", 502),
                                                 ("malformed", 502)], ids=["timeout", "connect", "reset", "malformed"])
def test_transport_outcomes_have_statuses(outcome: str, status: int) -> None:
    assert UpstreamFailure(outcome, "x").status == status


NOW = 1_700_000_000.0


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "2.5"}, 2.5),
    ({"Retry-After": "-4"}, None),
    ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
    ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
    ({"Retry-After": "Tue, 14 Nov 2023 22:14:20 -0000"}, 60.0),
    ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
    ({"retry-after-ms": "junk", "Retry-After": "9"}, 9.0),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "nan"}, None),
    ({"Retry-After": "inf"}, None),
    ({}, None),
], ids=["seconds", "lowercase-fractional", "negative", "http-date", "past-date", "minus-zero-zone",
        "ms-first", "bad-ms", "garbage", "nan", "inf", "absent"])
def test_retry_after_seconds(headers: dict[str, str], seconds: float | None) -> None:
    for h in (headers, CIMultiDict(headers)):
        got = retry_after_seconds(h, now=NOW)
        assert (got is None) if seconds is None else got == pytest.approx(seconds, abs=1.0)


@pytest.mark.parametrize(("headers", "seconds", "problem"), [
    ({"Retry-After": "-4"}, None, "Retry-After '-4' is negative"),
    ({"Retry-After": "nan"}, None, "Retry-After 'nan' is not finite"),
    ({"Retry-After": "1e400"}, None, "Retry-After '1e400' is not finite"),
    ({"Retry-After": "soon"}, None, "Retry-After 'soon' is neither a number nor an HTTP date"),
    ({"Retry-After": "9" * 400}, HUGE_DELAY, None),  # a plain number too long for a float: huge, then capped
    ({"retry-after-ms": "junk", "Retry-After": "9"}, 9.0, "retry-after-ms 'junk' is not a number"),
    ({"retry-after-ms": "-1", "Retry-After": "9"}, 9.0, "retry-after-ms '-1' is negative"),
    ({"retry-after-ms": "1e308"}, 1e305, None),  # finite: a retry policy's max_cooldown caps it
    ({"Retry-After": "1000000000"}, 1e9, None),
], ids=["negative", "nan", "overflow", "garbage", "long-number-is-huge", "bad-ms", "negative-ms", "huge-ms", "huge"])
def test_retry_after_problems_are_described(headers: dict[str, str], seconds: float | None,
                                            problem: str | None) -> None:
    problems: list[str] = []
    assert retry_after_seconds(CIMultiDict(headers), now=NOW, problems=problems) == seconds
    assert problems == ([problem] if problem else [])


@pytest.mark.parametrize(("headers", "delay", "retry_after", "note"), [
    ({}, "99999999s", 99999999.0, None),
    ({}, "-5s", None, "retryDelay '-5s' is not a duration like '12s'"),
    ({}, "soon", None, "retryDelay 'soon' is not a duration like '12s'"),
    ({}, "9" * 400 + "s", HUGE_DELAY, None),
    ({"Retry-After": "-1"}, "3s", 3.0, "Retry-After '-1' is negative"),
    ({"Retry-After": "AIzaSECRET123"}, "3s", 3.0, "Retry-After '***' is neither a number nor an HTTP date"),
], ids=["huge-delay", "negative-delay", "garbage-delay", "long-delay-is-huge", "bad-header-then-delay",
        "secret-redacted"])
def test_parse_failure_notes_unusable_retry_hints(headers: dict[str, str], delay: str, retry_after: float | None,
                                                  note: str | None) -> None:
    body = orjson.dumps({"error": {"code": 429, "message": "quota", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}})
    f = parse_failure(429, CIMultiDict(headers), body, secrets=("AIzaSECRET123",))
    assert (f.retry_after, f.note) == (retry_after, note)


def test_each_upstream_codec_reads_its_own_error_bodies() -> None:
    read = {c.name: c.parse_failure for c in (openai.CODEC, anthropic.CODEC, gemini.CODEC)}
    for body in (GEMINI_429, [GEMINI_429]):
        f = read["gemini"](429, {}, orjson.dumps(body))
        assert (f.message, f.retry_after, f.model_scoped) == (GEMINI_429["error"]["message"], 12.0, True)
    f = read["anthropic"](529, {}, orjson.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                                             "message": "Overloaded"}}))
    assert (f.message, f.retry_after, f.model_scoped) == ("Overloaded", None, False)
    # Google's OpenAI-compatible endpoint: Gemini's body in an array, read by the openai codec
    google = [{"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT",
                         "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest"}]}}]
    assert read["openai"](400, {}, orjson.dumps(google)).message == "Invalid JSON payload received."


def test_anthropic_codec_knows_no_google_rpc_details() -> None:
    f = anthropic.CODEC.parse_failure(429, {}, orjson.dumps(GEMINI_429))
    assert (f.message, f.retry_after, f.model_scoped, f.note) == (
        "Resource has been exhausted (e.g. check quota).", None, False, None)
    assert anthropic.CODEC.parse_failure(429, {}, orjson.dumps([GEMINI_429])).message == "upstream returned HTTP 429"


def test_a_usable_header_hides_the_bodys_unusable_retry_hints() -> None:
    body = orjson.dumps({"error": {"message": "quota", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"}]}})
    f = gemini.CODEC.parse_failure(429, CIMultiDict({"Retry-After": "4"}), body)
    assert (f.retry_after, f.note) == (4.0, None)
    f = gemini.CODEC.parse_failure(429, {}, body)
    assert (f.retry_after, f.note) == (None, "retryDelay 'soon' is not a duration like '12s'")


# --- rendering a request ----------------------------------------------------------------------------------

ENV = make_environment(template_filters())
BASE = "https://generativelanguage.googleapis.com"


def template(url: str, headers: dict[str, str] | None = None, body: Any = None,
             query: dict[str, str] | None = None) -> Template:
    return Template("t", "POST", compile_tree(ENV, url), compile_tree(ENV, query) if query else None,
                    compile_tree(ENV, headers) if headers else None, compile_tree(ENV, body or {"model": "{{ model }}"}))


SAFE = template("{{ provider.base_url }}/v1beta/models/{{ model | path_segment }}:generateContent",
                headers={"x-goog-api-key": "{{ account.api_key }}"}, query={"alt": "{{ 'sse' if stream else none }}"})
NAIVE = template("{{ provider.base_url }}/v1beta/models/{{ model }}:generateContent")


def ctx(model: str = "gemini-2.5-flash", key: str = "k", stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "provider": {"base_url": BASE}, "account": {"api_key": key}}


def test_render_request() -> None:
    req = render_request(SAFE, ctx(stream=True), BASE)
    assert req.method == "POST"
    assert req.url == BASE + "/v1beta/models/gemini-2.5-flash:generateContent"
    assert req.params == {"alt": "sse"}
    assert req.headers == {"Content-Type": "application/json", "User-Agent": USER_AGENT, "x-goog-api-key": "k"}
    assert orjson.loads(req.body) == {"model": "gemini-2.5-flash"}
    assert render_request(SAFE, ctx(), BASE).params is None  # the pruned query leaves no params


@pytest.mark.parametrize("value", ["k\r\nX-Injected: 1", "k\nX-Injected: 1", "k\rx", "k\x00"],
                         ids=["crlf", "lf", "cr", "nul"])
def test_header_value_with_cr_lf_is_refused(value: str) -> None:
    with pytest.raises(GatewayError) as info:
        render_request(SAFE, ctx(key=value), BASE)
    assert info.value.status == 500 and "CR/LF" in info.value.message


def test_template_headers_replace_the_defaults_whatever_their_case() -> None:
    t = template("{{ provider.base_url }}/x", headers={"user-agent": "mine/1", "content-type": "text/plain"})
    req = render_request(t, ctx(), BASE)
    assert req.headers == {"user-agent": "mine/1", "content-type": "text/plain"}  # one of each, not two
    assert USER_AGENT.startswith("router/")
    empty = template("{{ provider.base_url }}/x", headers={"user-agent": "", "content-type": "{{ none }}"})
    assert render_request(empty, ctx(), BASE).headers == {"Content-Type": "application/json", "User-Agent": USER_AGENT}


def test_header_name_with_cr_lf_is_refused() -> None:
    t = template("{{ provider.base_url }}/x", headers={"X-A\r\nX-B": "v"})
    with pytest.raises(GatewayError, match="CR/LF"):
        render_request(t, ctx(), BASE)


# ".." and "." are harmless there: the ":generateContent" suffix keeps them from being dot segments.
NAIVE_REFUSED = {"../x", "a/../../b", "x#y", "a/./b", "..%2F..%2Fx", "a\\b"}


@pytest.mark.parametrize("model", ["../x", "a/../../b", "x?y", "x#y", "a%2Fb", "..", ".", "%2e%2e", "a/./b",
                                   "..%2F..%2Fx", "a\\b"],
                         ids=["dotdot", "nested-dotdot", "query", "fragment", "encoded-slash", "bare-dotdot", "dot",
                              "encoded-dotdot", "dot-segment", "encoded-traversal", "backslash"])
def test_model_names_cannot_leave_base_url(model: str) -> None:
    # With path_segment the model stays one segment under /v1beta/models/, or the URL is refused.
    try:
        req = render_request(SAFE, ctx(model), BASE)
    except GatewayError as e:  # the client's model broke the URL: a 400 naming the field
        assert e.status == 400 and e.param == "model" and "base_url" in e.message
    else:
        prefix = BASE + "/v1beta/models/"
        assert req.url.startswith(prefix) and req.url.endswith(":generateContent")
        segment = req.url[len(prefix):-len(":generateContent")]
        assert "/" not in segment and "?" not in segment and "#" not in segment
        assert unquote(segment) == model
    # A template that forgets path_segment is still caught by the URL check for every traversal.
    if model in NAIVE_REFUSED:
        with pytest.raises(GatewayError, match="leave the provider's base_url"):
            render_request(NAIVE, ctx(model), BASE)


@pytest.mark.parametrize(("url", "inside"), [
    (BASE, True),
    (BASE + "/v1beta/models/m:generateContent", True),
    (BASE + "?key=1", True),
    (BASE + "/a/b?x=../y", True),
    (BASE + ".evil.com/x", False),
    (BASE + "@evil.com/x", False),
    ("https://evil.com/" + BASE, False),
    ("http://generativelanguage.googleapis.com/x", False),
    (BASE + "/../x", False),
    (BASE + "/a/%2e%2E/x", False),
    (BASE + "/a/.%2e/x", False),
    (BASE + "/a/%252e%252e/x", False),
    (BASE + "/a/..%2Fx", False),
    (BASE + "/a%5c..%5cx", False),
    (BASE + "/a#frag", False),
    (BASE + "/a\\b", False),
], ids=["exact", "path", "query", "dots-in-query", "host-suffix", "userinfo", "other-host", "scheme",
        "dotdot", "encoded-dotdot", "half-encoded", "double-encoded", "encoded-slash-dotdot", "encoded-backslash",
        "fragment", "backslash"])
def test_inside(url: str, inside: bool) -> None:
    assert _inside(url, BASE) is inside


def test_rendered_url_must_be_a_string() -> None:
    t = template("{{ [provider.base_url] }}")
    with pytest.raises(GatewayError, match="base_url"):
        render_request(t, ctx(), BASE)
