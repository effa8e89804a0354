"""The AWS event-stream framing: round trips across any chunk split, CRC and bound checks, botocore."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import eventstream as es

HEADER_VALUES = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=40),
                          st.text(max_size=40), st.uuids())
MESSAGES = st.lists(st.tuples(st.dictionaries(st.text(min_size=1, max_size=20), HEADER_VALUES, max_size=5),
                              st.binary(max_size=300)), min_size=1, max_size=6)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(MESSAGES, st.lists(st.integers(0, 10_000), max_size=12))
def test_round_trip_across_any_chunk_split(messages: list[tuple[dict[str, es.HeaderValue], bytes]],
                                           cuts: list[int]) -> None:
    wire = b"".join(es.encode_message(h, p) for h, p in messages)
    decoder = es.EventStreamDecoder()
    out = [m for chunk in _split(wire, cuts) for m in decoder.feed(chunk)] + decoder.close()
    assert [(m.headers, m.payload) for m in out] == messages


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 10_000), st.integers(0, 255))
def test_any_flipped_byte_is_an_error_never_a_wrong_message(payload: bytes, where: int, xor: int) -> None:
    wire = bytearray(es.event("contentBlockDelta", {"p": payload.hex()}))
    wire[where % len(wire)] ^= xor or 1
    decoder = es.EventStreamDecoder()
    with pytest.raises(es.EventStreamError):
        decoder.feed(bytes(wire))
        decoder.close()


def test_message_crc_mismatch() -> None:
    wire = bytearray(es.event("messageStop", {"stopReason": "end_turn"}))
    wire[-1] ^= 0xFF
    with pytest.raises(es.EventStreamError, match="message CRC"):
        es.EventStreamDecoder().feed(bytes(wire))


def test_prelude_crc_mismatch() -> None:
    wire = bytearray(es.event("messageStop", {}))
    wire[9] ^= 0x01
    with pytest.raises(es.EventStreamError, match="prelude CRC"):
        es.EventStreamDecoder().feed(bytes(wire))


def test_a_message_over_the_limit_is_refused_before_it_is_buffered() -> None:
    prelude = struct.pack(">II", 64 * 1024 * 1024, 0)
    head = prelude + struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(es.EventStreamError, match="out of bounds"):
        es.EventStreamDecoder().feed(head)
    small = es.event("x", {"a": "b" * 100})
    with pytest.raises(es.EventStreamError, match="out of bounds"):
        es.EventStreamDecoder(limit=64).feed(small[:12])
    assert es.EventStreamDecoder(limit=1 << 40).limit == es.MAX_MESSAGE


def test_a_stream_ending_inside_a_message() -> None:
    decoder = es.EventStreamDecoder()
    assert decoder.feed(es.event("messageStart", {"role": "assistant"})[:-3]) == []
    with pytest.raises(es.EventStreamError, match="ended inside"):
        decoder.close()


def test_framing_names_events_exceptions_and_errors() -> None:
    framing = es.EventStreamFraming()
    error = es.encode_message({":message-type": "error", ":error-code": "InternalFailure",
                               ":error-message": "boom"}, b"")
    wire = es.event("messageStart", {"role": "assistant"}) + es.exception("ThrottlingException", "slow") + error
    assert framing.feed(wire) == [("messageStart", b'{"role":"assistant"}'),
                                  ("exception:ThrottlingException", b'{"message":"slow"}'),
                                  ("error:InternalFailure", b'{"message":"boom"}')]
    with pytest.raises(es.EventStreamError, match="type"):
        framing.feed(es.encode_message({":message-type": "strange"}, b""))


def test_botocore_reads_what_we_write() -> None:
    from botocore.eventstream import EventStreamBuffer

    ident = uuid.UUID(int=7)
    headers: dict[str, es.HeaderValue] = {":event-type": "contentBlockDelta", ":message-type": "event",
                                          "flag": True, "off": False, "n": -5, "raw": b"\x00\x01", "id": ident}
    buffer = EventStreamBuffer()
    buffer.add_data(es.encode_message(headers, b'{"delta":{"text":"hi"}}'))
    (message,) = list(buffer)
    assert message.payload == b'{"delta":{"text":"hi"}}'
    assert message.headers == {**headers, "id": ident.bytes}  # botocore reads a uuid as its 16 bytes


def test_every_header_type_decodes() -> None:
    def typed(name: bytes, kind: int, value: bytes) -> bytes:
        return bytes([len(name)]) + name + bytes([kind]) + value

    head = (typed(b"b", 2, b"\xff") + typed(b"s", 3, b"\x01\x00") + typed(b"i", 4, b"\x00\x00\x01\x00")
            + typed(b"t", 8, struct.pack(">q", 1700000000000)))
    prelude = struct.pack(">II", 12 + len(head) + 4, len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head
    (message,) = es.EventStreamDecoder().feed(body + struct.pack(">I", zlib.crc32(body)))
    assert message.headers == {"b": -1, "s": 256, "i": 256, "t": 1700000000000}
    bad = typed(b"x", 42, b"")
    prelude = struct.pack(">II", 12 + len(bad) + 4, len(bad))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + bad
    with pytest.raises(es.EventStreamError, match="type 42"):
        es.EventStreamDecoder().feed(body + struct.pack(">I", zlib.crc32(body)))


def test_intact_messages_before_a_fault_in_the_same_read_still_come_out() -> None:
    bad = bytearray(es.event("contentBlockDelta", {"delta": {"text": "b"}}))
    bad[-1] ^= 0xFF
    framing = es.EventStreamFraming()
    out = framing.feed(es.event("contentBlockDelta", {"delta": {"text": "a"}}) + bytes(bad))
    assert [name for name, _ in out] == ["contentBlockDelta", es.MALFORMED]
    assert b"CRC" in out[-1][1]
    with pytest.raises(es.EventStreamError, match="CRC"):  # broken for good: nothing later is trusted
        framing.feed(es.event("messageStop", {}))
    with pytest.raises(es.EventStreamError, match="CRC"):
        framing.close()
