"""The Bedrock upstream codec, its filters, the aws_sigv4 signer and the fake's signature check, in isolation."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from router import eventstream as es
from router.accounts import compile_accounts
from router.canonical import (
    CanonicalRequest,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from router.credential_aws import AwsSigV4, from_config
from router.credential_kinds import KINDS
from router.failures import CONTEXT_LENGTH
from router.filters import bedrock as f
from router.registry import UPSTREAM_CODECS
from router.sim import sigv4_check as keys
from router.upstream_codecs import bedrock as b
from router.upstream_request import UpstreamRequest

CODEC = UPSTREAM_CODECS["bedrock"]
USAGE = {"inputTokens": 10, "outputTokens": 5, "totalTokens": 27, "cacheReadInputTokens": 8,
         "cacheWriteInputTokens": 4}


# --- decoding --------------------------------------------------------------------------------------
def test_decode_response() -> None:
    body = {"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
        {"text": "Hello"},
        {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}},
        {"image": {"format": "png", "source": {"bytes": "AA=="}}}]}},
        "stopReason": "tool_use", "usage": USAGE, "metrics": {"latencyMs": 3}}
    assert b.decode_response(body) == [ReasoningDelta("hmm", signature="sig"), TextDelta("Hello"),
                                       ToolCallStart(0, "t1", "f"), ToolCallDelta(0, '{"a":1}'),
                                       Finish("tool_calls"), Usage(22, 5, 8, 0)]


@pytest.mark.parametrize("body", [[], {"output": {}}, {"output": {"message": {"content": [1]}}},
                                  {"output": {"message": {"content": [{"text": 3}]}}},
                                  {"output": {"message": {"content": [{"toolUse": {"name": "f"}}]}}}])
def test_decode_response_refuses_malformed(body: Any) -> None:
    with pytest.raises(ValueError, match="bedrock"):
        b.decode_response(body)


@pytest.mark.parametrize("reason,expected", [("end_turn", "stop"), ("max_tokens", "length"),
                                             ("guardrail_intervened", "content_filter"), ("new", "stop")])
def test_stop_reasons(reason: str, expected: str) -> None:
    assert b.finish_reason(reason) == expected


def _stream(*frames: bytes) -> list[Any]:
    framing, decoder = CODEC.framing(1 << 20), CODEC.stream_decoder()
    out: list[Any] = []
    for name, data in framing.feed(b"".join(frames)) + framing.close():
        out += decoder.feed(name, data)
    return out + decoder.finish()


def test_stream_decoder() -> None:
    ev = es.event
    events = _stream(
        ev("messageStart", {"role": "assistant"}),
        ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}}),
        ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "s"}}}),
        ev("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hi"}}),
        ev("contentBlockStop", {"contentBlockIndex": 1}),
        ev("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
        ev("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"a":'}}}),
        ev("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "1}"}}}),
        ev("messageStop", {"stopReason": "tool_use"}),
        ev("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}}),
        ev("somethingNew", {"x": 1}))
    assert events == [ReasoningDelta("hm"), ReasoningDelta("", signature="s"), TextDelta("Hi"),
                      ToolCallStart(0, "t", "f"), ToolCallDelta(0, '{"a":'), ToolCallDelta(0, "1}"),
                      Finish("tool_calls"), Usage(22, 5, 8, 0)]


@pytest.mark.parametrize("name,status,kind", [("throttlingException", 429, "rate_limit"),
                                              ("ValidationException", 400, "invalid_request"),
                                              ("modelStreamErrorException", 500, "server"),
                                              ("serviceUnavailableException", 503, "unavailable"),
                                              ("modelNotReadyException", 503, "unavailable"),
                                              ("accessDeniedException", 403, "permission"),
                                              ("somethingElse", 500, "server")])
def test_exceptions_mid_stream(name: str, status: int, kind: str) -> None:
    events = _stream(es.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "a"}}),
                     es.exception(name, "it broke"))
    assert events == [TextDelta("a"), StreamError(status, kind, "it broke")]


def test_an_error_message_mid_stream() -> None:
    error = es.encode_message({":message-type": "error", ":error-code": "InternalFailure",
                               ":error-message": "boom"}, b"")
    assert _stream(error) == [StreamError(500, "server", "boom")]


@pytest.mark.parametrize("event,data", [("contentBlockDelta", b"{nope"), ("contentBlockDelta", b"{}"),
                                        ("contentBlockDelta", b'{"contentBlockIndex": 0, "delta": {"toolUse": {}}}'),
                                        ("messageStop", b"[]"), (es.MALFORMED, b"CRC")])
def test_malformed_stream_events(event: str, data: bytes) -> None:
    with pytest.raises(ValueError):
        CODEC.stream_decoder().feed(event, data)


def test_error_bodies() -> None:
    failure = CODEC.parse_failure(400, {}, b'{"message": "Input is too long for requested model."}')
    assert failure.outcome == 400 and failure.reason == CONTEXT_LENGTH and "too long" in failure.message
    failure = CODEC.parse_failure(429, {"Retry-After": "2"}, b'{"Message": "Too many requests"}')
    assert (failure.message, failure.retry_after, failure.reason) == ("Too many requests", 2.0, None)
    assert CODEC.parse_failure(503, {}, b"<html>").message == "upstream returned HTTP 503"


# --- filters ---------------------------------------------------------------------------------------
def test_messages_filter() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image", "url": "data:image/jpeg;base64,QUJD"},
                                     {"type": "image", "url": "https://example.com/x.png"},
                                     {"type": "image", "data": "REVG", "media_type": "image/webp"}]},
        {"role": "assistant", "content": [{"type": "thinking", "text": "t", "signature": "s"},
                                          {"type": "thinking", "text": "unsigned"},
                                          {"type": "text", "text": "calling"},
                                          {"type": "tool_call", "id": "c1", "name": "f", "arguments": '{"a": 1}'}]},
        {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c1", "content": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]},
        {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c2", "content": "", "is_error": True}]},
    ]
    assert f.bedrock_messages(messages) == [
        {"role": "user", "content": [{"text": "look"}, {"image": {"format": "jpeg", "source": {"bytes": "QUJD"}}},
                                     {"image": {"format": "webp", "source": {"bytes": "REVG"}}}]},
        {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "t", "signature": "s"}}}, {"text": "calling"},
            {"toolUse": {"toolUseId": "c1", "name": "f", "input": {"a": 1}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "c1", "content": [{"text": "ok"}]}},
            {"toolResult": {"toolUseId": "c2", "content": [{"text": " "}], "status": "error"}},
            {"text": "and?"}]}]


def test_config_filters() -> None:
    req = CanonicalRequest(model="m", messages=[], max_tokens=100, temperature=1.5, top_p=0.9, stop=["x"],
                           tools=[{"name": "f", "description": "d", "parameters": {"properties": {}}},
                                  {"name": "g", "parameters": None}], tool_choice={"name": "g"})
    assert f.bedrock_inference_config(req) == {"maxTokens": 100, "temperature": 1.0, "topP": 0.9,
                                               "stopSequences": ["x"]}
    assert f.bedrock_tool_config(req) == {"tools": [
        {"toolSpec": {"name": "f", "description": "d", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
        {"toolSpec": {"name": "g", "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
        "toolChoice": {"tool": {"name": "g"}}}
    assert f.bedrock_tool_config(CanonicalRequest(model="m", messages=[])) is None
    assert f.bedrock_inference_config(CanonicalRequest(model="m", messages=[])) is None
    assert f.bedrock_system("be brief") == [{"text": "be brief"}] and f.bedrock_system("") is None
    required = CanonicalRequest(model="m", messages=[], tools=[{"name": "f"}], tool_choice="required")
    assert f.bedrock_tool_config(required)["toolChoice"] == {"any": {}}  # type: ignore[index]
    none = CanonicalRequest(model="m", messages=[], tools=[{"name": "f"}], tool_choice="none")
    assert "toolChoice" not in f.bedrock_tool_config(none)  # type: ignore[operator]


# --- the signer ------------------------------------------------------------------------------------
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "session-token-that-must-not-leak"


def test_signer_repr_and_errors_keep_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    signer = from_config({"type": "aws_sigv4", "access_key_id": "AKID", "secret_access_key": SECRET,
                          "session_token": TOKEN, "region": "eu-west-1"})
    assert SECRET not in repr(signer) and TOKEN not in repr(signer) and "AKID" in repr(signer)
    accounts = compile_accounts("p", {"accounts": [{"email": "a@x", "credential": {
        "type": "aws_sigv4", "access_key_id": "AKID", "secret_access_key": SECRET, "region": "eu-west-1"}}]})
    assert isinstance(accounts[0].signer, AwsSigV4) and SECRET not in repr(accounts)
    bad = [{"secret_access_key": SECRET, "region": "us-east-1"},
           {"access_key_id": "AKID", "secret_access_key": SECRET, "region": "Not A Region"},
           {"access_key_id": "AKID", "secret_access_key": SECRET + "\n", "region": "us-east-1", "service": "x y"},
           {"access_key_id": "AKID", "secret_access_key": SECRET + "é", "region": "us-east-1"},
           {"access_key_id": "AKID", "secret_access_key": SECRET, "region": "us-east-1", "session_token": 5}]
    for mapping in bad:
        with pytest.raises(ValueError) as err:
            from_config({"type": "aws_sigv4", **mapping})
        assert SECRET not in str(err.value) and "credential field" in str(err.value)
    assert KINDS["aws_sigv4"] is from_config  # the registry builds it from an account's credential
    assert SECRET not in caplog.text


def test_signer_folds_the_query_in_and_replaces_stale_auth_headers() -> None:
    signer = AwsSigV4("AKID", SECRET, "us-east-1", TOKEN)
    up = UpstreamRequest("POST", "https://bedrock-runtime.us-east-1.amazonaws.com/model/a.b-v1%3A0/converse",
                         {"x": "1 2"}, {"Content-Type": "application/json", "Authorization": "Bearer old",
                                        "User-Agent": "router"}, b"{}")
    signer.sign(up, 1767225600.0)
    assert up.params is None and up.url.endswith("/model/a.b-v1:0/converse?x=1+2")
    assert up.headers["Host"] == "bedrock-runtime.us-east-1.amazonaws.com"
    assert up.headers["X-Amz-Date"] == "20260101T000000Z" and up.headers["X-Amz-Security-Token"] == TOKEN
    assert up.headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=")
    assert up.headers["User-Agent"] == "router"


# --- the fake's check ------------------------------------------------------------------------------
def _signed(signer: AwsSigV4, now: float, body: bytes = b"{}", tamper: dict[str, str] | None = None) -> Any:
    up = UpstreamRequest("POST", "http://127.0.0.1:8080/model/m%3A0/converse", None,
                         {"Content-Type": "application/json"}, body)
    signer.sign(up, now)
    path = up.url.split("8080", 1)[1]
    return make_mocked_request("POST", path, headers={**up.headers, **(tamper or {})})


def test_the_fake_checks_signatures() -> None:
    now = time.time()
    good = AwsSigV4(keys.TEST_ACCESS_KEY_ID, keys.TEST_SECRET_ACCESS_KEY, "us-east-1")
    session = AwsSigV4(keys.TEST_SESSION_KEY_ID, keys.TEST_SESSION_SECRET, "us-east-1", keys.TEST_SESSION_TOKEN)
    assert keys.check(_signed(good, now), b"{}", now) is None
    assert keys.check(_signed(session, now), b"{}", now) is None
    cases = {
        "InvalidSignatureException": [keys.check(_signed(good, now), b"{ }", now),
                                      keys.check(_signed(good, now - 3600), b"{}", now),
                                      keys.check(_signed(good, now, tamper={"Content-Type": "text/plain"}), b"{}",
                                                 now),
                                      keys.check(_signed(good, now, tamper={"X-Amz-Extra": "1"}), b"{}", now),
                                      keys.check(_signed(AwsSigV4(good.access_key_id, "wrong", "us-east-1"), now),
                                                 b"{}", now)],
        "UnrecognizedClientException": [keys.check(_signed(AwsSigV4("AKIDUNKNOWN", "x", "us-east-1"), now), b"{}",
                                                   now),
                                        keys.check(_signed(AwsSigV4(session.access_key_id, session.secret_access_key,
                                                                    "us-east-1"), now), b"{}", now)],
        "MissingAuthenticationTokenException": [keys.check(make_mocked_request("POST", "/model/m/converse"), b"",
                                                           now)],
    }
    for exception, refusals in cases.items():
        assert [r.exception if r else None for r in refusals] == [exception] * len(refusals)



def test_claude_models_get_thinking_and_top_k_the_anthropic_way() -> None:
    claude = "us.anthropic.claude-sonnet-4-20250514-v1:0"
    thinking = CanonicalRequest(model="m", messages=[], max_tokens=100, temperature=0.5, top_p=0.5, top_k=5,
                                reasoning={"effort": "low"})
    assert f.bedrock_additional_fields(thinking, claude) == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert f.bedrock_inference_config(thinking, claude) == {"maxTokens": 1124, "topP": 0.95}
    plain = CanonicalRequest(model="m", messages=[], temperature=0.5, top_k=5)
    assert f.bedrock_additional_fields(plain, claude) == {"top_k": 5}
    assert f.bedrock_inference_config(plain, claude) == {"temperature": 0.5}
    forced = CanonicalRequest(model="m", messages=[], reasoning={"effort": "high"}, tool_choice="required",
                              tools=[{"name": "f"}])
    assert f.bedrock_additional_fields(forced, claude) is None  # Anthropic refuses thinking with a forced tool
    for model in ("amazon.nova-pro-v1:0", "meta.llama3-70b-instruct-v1:0", None):
        assert f.bedrock_additional_fields(thinking, model) is None
        assert f.bedrock_inference_config(thinking, model) == {"maxTokens": 100, "temperature": 0.5, "topP": 0.5}
