"""Known-bytes tests for the MessagePack hub protocol."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgpack
import pytest

from hubs.protocol import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    EncodeError,
    InvalidMessageError,
    InvocationMessage,
    MessagePackHubProtocol,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    UnsupportedTypeError,
)
from hubs.protocol.varint import encode_varint, read_varint

PROTOCOL = MessagePackHubProtocol()


def decode(data: bytes) -> list:
    return PROTOCOL.decoder(32 * 1024).feed(data)


def test_ping_is_exactly_02_91_06():
    assert PROTOCOL.encode(PingMessage()) == bytes.fromhex("029106")
    assert decode(bytes.fromhex("029106")) == [PingMessage()]


def test_js_five_element_invocation():
    # [1, {}, "0", "Send", ["hi"]] as @microsoft/signalr-protocol-msgpack writes it.
    wire = bytes.fromhex("0e 95 01 80 a1 30 a4 53656e64 91 a2 6869")
    assert decode(wire) == [InvocationMessage("Send", ["hi"], invocation_id="0")]


def test_js_five_element_non_blocking_invocation():
    wire = bytes.fromhex("0b 95 01 80 c0 a4 46697265 91 01")
    assert decode(wire) == [InvocationMessage("Fire", [1])]


def test_server_invocation_always_has_six_elements():
    wire = PROTOCOL.encode(InvocationMessage("Recv", ["x"]))
    assert wire == bytes.fromhex("0d 96 01 80 c0 a4 52656376 91 a1 78 90")


@pytest.mark.parametrize(
    ("message", "body"),
    [
        (StreamItemMessage("1", None), "94 02 80 a1 31 c0"),
        (CompletionMessage.empty("1"), "94 03 80 a1 31 02"),
        (CompletionMessage.with_result("1", 42), "95 03 80 a1 31 03 2a"),
        (CompletionMessage.with_result("1", None), "95 03 80 a1 31 03 c0"),
        (CompletionMessage.with_error("1", "no"), "95 03 80 a1 31 01 a2 6e6f"),
        (CancelInvocationMessage("1"), "93 05 80 a1 31"),
        (CloseMessage(), "93 07 c0 c2"),
        (CloseMessage("bye", allow_reconnect=True), "93 07 a3 627965 c3"),
        (AckMessage(300), "92 08 cd 012c"),
        (SequenceMessage(1), "92 09 01"),
        (StreamInvocationMessage("C", [], "0", ["1"]), "96 04 80 a1 30 a1 43 90 91 a1 31"),
        (StreamItemMessage("1", b"\x00\x01", {"k": "v"}), "94 02 81 a1 6b a1 76 a1 31 c4 02 0001"),
    ],
)
def test_encode_known_bytes(message, body):
    raw = bytes.fromhex(body)
    assert PROTOCOL.encode(message) == bytes([len(raw)]) + raw
    assert decode(bytes([len(raw)]) + raw) == [message]


def test_js_close_with_two_elements():
    assert decode(bytes.fromhex("03 92 07 c0")) == [CloseMessage()]
    assert decode(bytes.fromhex("05 92 07 a2 6f6b")) == [CloseMessage("ok")]


def test_js_batched_binary_frame():
    frame = bytes.fromhex("029106") + bytes.fromhex("0e 95 01 80 a1 30 a4 53656e64 91 a2 6869")
    frame += bytes.fromhex("06 94 03 80 a1 31 02") + bytes.fromhex("03 92 07 c0")
    assert decode(frame) == [
        PingMessage(),
        InvocationMessage("Send", ["hi"], invocation_id="0"),
        CompletionMessage.empty("1"),
        CloseMessage(),
    ]


def test_unknown_types_are_skipped():
    frame = bytes.fromhex("02 91 63") + bytes.fromhex("03 92 00 01") + bytes.fromhex("029106")
    assert decode(frame) == [PingMessage()]


def test_js_timestamp_decodes_to_aware_utc_datetime():
    # StreamItem whose item is a JS Date: timestamp32 ext -1 of 1700000000 s.
    body = bytes.fromhex("94 02 80 a1 31 d6 ff") + (1_700_000_000).to_bytes(4, "big")
    [message] = decode(bytes([len(body)]) + body)
    assert message.item == datetime.fromtimestamp(1_700_000_000, UTC)
    assert message.item.tzinfo is not None


def test_encode_dates_uuids_decimals():
    aware = datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2024, 1, 2, 3, 4, 5)
    wire = PROTOCOL.encode(StreamItemMessage("1", [aware, naive, uuid.UUID(int=1), Decimal("2.50")]))
    body = msgpack.unpackb(wire[1:], timestamp=3)
    assert body[3] == [
        aware.astimezone(UTC),
        naive.replace(tzinfo=UTC),
        "00000000-0000-0000-0000-000000000001",
        "2.50",
    ]
    assert b"\xd7\xff" in wire  # timestamp64 extension, type -1


def test_whole_floats_from_js_arrive_as_ints():
    body = msgpack.packb([1, {}, None, "t", [2, 2.5]])
    [message] = decode(bytes([len(body)]) + body)
    assert message.arguments == [2, 2.5]
    assert type(message.arguments[0]) is int


def test_nan_is_valid_in_messagepack():
    wire = PROTOCOL.encode(StreamItemMessage("1", float("inf")))
    assert decode(wire) == [StreamItemMessage("1", float("inf"))]


@pytest.mark.parametrize("value", [object(), {1, 2}, complex(1, 2)])
def test_encode_refuses_unsupported_types(value):
    with pytest.raises(UnsupportedTypeError, match="cannot be sent over the hub protocol"):
        PROTOCOL.encode(StreamItemMessage("1", value))


def test_encode_refuses_out_of_range_ints_and_surrogates():
    with pytest.raises(EncodeError):
        PROTOCOL.encode(StreamItemMessage("1", 1 << 64))
    with pytest.raises(EncodeError):
        PROTOCOL.encode(StreamItemMessage("1", "\ud800"))


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0, "00"), (127, "7f"), (128, "8001"), (300, "ac02"), ((1 << 31) - 1, "ffffffff07")],
)
def test_varint(value, wire):
    assert encode_varint(value) == bytes.fromhex(wire)
    assert read_varint(bytes.fromhex(wire), 0) == (value, len(wire) // 2)


def test_varint_limits():
    assert read_varint(b"\x80\x80", 0) is None
    with pytest.raises(InvalidMessageError, match=r"^Cannot read message size\.$"):
        read_varint(b"\x80\x80\x80\x80\x80\x01", 0)
    with pytest.raises(InvalidMessageError, match="2GB"):
        read_varint(b"\xff\xff\xff\xff\x08", 0)
    with pytest.raises(ValueError, match="cannot be framed"):
        encode_varint(1 << 31)
