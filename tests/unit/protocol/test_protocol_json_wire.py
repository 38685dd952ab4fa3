"""Known-bytes tests for the JSON hub protocol."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from hubs.protocol import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    EncodeError,
    InvocationMessage,
    JsonHubProtocol,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    UnsupportedTypeError,
)

PROTOCOL = JsonHubProtocol()


def decode(data: bytes | str) -> list:
    return PROTOCOL.decoder(32 * 1024).feed(data)


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (PingMessage(), b'{"type":6}\x1e'),
        (
            InvocationMessage("Recv", ["x", 1]),
            b'{"type":1,"target":"Recv","arguments":["x",1]}\x1e',
        ),
        (
            InvocationMessage("Ask", [], invocation_id="7", stream_ids=[], headers={}),
            b'{"type":1,"invocationId":"7","target":"Ask","arguments":[]}\x1e',
        ),
        (
            InvocationMessage("Up", [], stream_ids=["1"], headers={"a": "b"}),
            b'{"type":1,"target":"Up","arguments":[],"streamIds":["1"],"headers":{"a":"b"}}\x1e',
        ),
        (
            StreamInvocationMessage("Counter", [3], "0"),
            b'{"type":4,"invocationId":"0","target":"Counter","arguments":[3]}\x1e',
        ),
        (StreamItemMessage("1", None), b'{"type":2,"invocationId":"1","item":null}\x1e'),
        (StreamItemMessage("1", "é"), '{"type":2,"invocationId":"1","item":"é"}\x1e'.encode()),
        (
            CompletionMessage.with_result("1", None),
            b'{"type":3,"invocationId":"1","result":null}\x1e',
        ),
        (CompletionMessage.with_result("1", 42), b'{"type":3,"invocationId":"1","result":42}\x1e'),
        (
            CompletionMessage.with_error("1", "boom"),
            b'{"type":3,"invocationId":"1","error":"boom"}\x1e',
        ),
        (CompletionMessage.empty("1"), b'{"type":3,"invocationId":"1"}\x1e'),
        (CancelInvocationMessage("1"), b'{"type":5,"invocationId":"1"}\x1e'),
        (CloseMessage(), b'{"type":7}\x1e'),
        (CloseMessage(allow_reconnect=False, error=None), b'{"type":7}\x1e'),
        (
            CloseMessage("Connection closed with an error.", allow_reconnect=True),
            b'{"type":7,"error":"Connection closed with an error.","allowReconnect":true}\x1e',
        ),
        (AckMessage(5), b'{"type":8,"sequenceId":5}\x1e'),
        (SequenceMessage(1), b'{"type":9,"sequenceId":1}\x1e'),
    ],
)
def test_encode_known_bytes(message, wire):
    assert PROTOCOL.encode(message) == wire
    assert decode(wire) == [_normalised(message)]


def _normalised(message):
    if isinstance(message, InvocationMessage):
        return InvocationMessage(
            message.target,
            message.arguments,
            message.invocation_id,
            message.stream_ids or None,
            message.headers or None,
        )
    return message


def test_record_separator_inside_strings_is_escaped():
    wire = PROTOCOL.encode(StreamItemMessage("1", "a\x1eb"))
    assert wire.count(b"\x1e") == 1
    assert b"\\u001e" in wire
    assert decode(wire) == [StreamItemMessage("1", "a\x1eb")]


def test_encode_many_concatenates_whole_records():
    wire = PROTOCOL.encode_many([PingMessage(), CompletionMessage.empty("1")])
    assert wire == b'{"type":6}\x1e{"type":3,"invocationId":"1"}\x1e'
    assert PROTOCOL.encode_many([]) == b""


def test_decode_js_batched_text_frame():
    frame = (
        '{"type":6}\x1e'
        '{"type":1,"target":"Send","arguments":["hi"],"invocationId":"0"}\x1e'
        '{"arguments":[],"type":1,"target":"Fire"}\x1e'
        '{"type":4,"invocationId":"1","target":"Counter","arguments":[10,500],"streamIds":[]}\x1e'
        '{"type":7}\x1e'
    )
    assert decode(frame) == [
        PingMessage(),
        InvocationMessage("Send", ["hi"], invocation_id="0"),
        InvocationMessage("Fire", []),
        StreamInvocationMessage("Counter", [10, 500], "1"),
        CloseMessage(),
    ]


def test_signalrcore_completion_with_null_error():
    wire = b'{"type":3,"invocationId":"abc","result":5,"error":null,"headers":{}}\x1e'
    assert decode(wire) == [CompletionMessage.with_result("abc", 5)]


def test_null_optional_fields_are_absent():
    wire = (
        b'{"type":1,"invocationId":null,"target":"t","arguments":[],'
        b'"streamIds":null,"headers":null}\x1e'
        b'{"type":7,"error":null,"allowReconnect":null}\x1e'
    )
    assert decode(wire) == [InvocationMessage("t", []), CloseMessage()]


def test_empty_invocation_id_means_non_blocking():
    assert decode(b'{"type":1,"invocationId":"","target":"t","arguments":[]}\x1e') == [
        InvocationMessage("t", [])
    ]


def test_upload_stream_invocation_and_items():
    frame = (
        b'{"type":1,"invocationId":"0","target":"Upload","arguments":["a"],"streamIds":["1"]}\x1e'
        b'{"type":2,"invocationId":"1","item":{"n":1}}\x1e'
        b'{"type":3,"invocationId":"1","error":"client failed"}\x1e'
    )
    assert decode(frame) == [
        InvocationMessage("Upload", ["a"], invocation_id="0", stream_ids=["1"]),
        StreamItemMessage("1", {"n": 1}),
        CompletionMessage.with_error("1", "client failed"),
    ]


def test_unknown_properties_and_types_are_ignored():
    frame = (
        b'{"type":6,"foo":1}\x1e{"type":99,"x":[1]}\x1e{"type":0}\x1e'
        b'{"type":5,"invocationId":"2","bar":null}\x1e'
    )
    assert decode(frame) == [PingMessage(), CancelInvocationMessage("2")]


def test_headers_and_sequence_messages():
    frame = (
        b'{"type":5,"invocationId":"3","headers":{"traceparent":"00-ab"}}\x1e'
        b'{"type":8,"sequenceId":12}\x1e{"type":9,"sequenceId":3}\x1e'
    )
    assert decode(frame) == [
        CancelInvocationMessage("3", headers={"traceparent": "00-ab"}),
        AckMessage(12),
        SequenceMessage(3),
    ]


def test_record_split_across_feeds_is_buffered():
    decoder = PROTOCOL.decoder(1024)
    assert decoder.feed(b'{"type":6}\x1e{"type"') == [PingMessage()]
    assert decoder.buffered == len(b'{"type"')
    assert decoder.feed(":6}") == []
    assert decoder.feed(b"\x1e") == [PingMessage()]
    assert decoder.buffered == 0


def test_encode_dates_uuids_decimals():
    tz = timezone(timedelta(hours=2))
    value = [
        datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz),
        date(2024, 1, 2),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("1.10"),
    ]
    wire = PROTOCOL.encode(InvocationMessage("t", value))
    assert json.loads(wire[:-1])["arguments"] == [
        "2024-01-02T03:04:05.123456Z",
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05+02:00",
        "2024-01-02",
        "12345678-1234-5678-1234-567812345678",
        "1.10",
    ]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), [{"x": float("nan")}]])
def test_encode_refuses_nan_and_infinity(value):
    with pytest.raises(EncodeError, match="NaN and Infinity cannot be sent as JSON"):
        PROTOCOL.encode(CompletionMessage.with_result("1", value))
    with pytest.raises(ValueError, match="NaN"):
        PROTOCOL.encode(InvocationMessage("t", [value]))


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", complex(1, 2)])
def test_encode_refuses_unsupported_types(value):
    with pytest.raises(UnsupportedTypeError, match="cannot be sent over the hub protocol") as info:
        PROTOCOL.encode(StreamItemMessage("1", value))
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, EncodeError)


def test_encode_refuses_lone_surrogates_and_bad_keys():
    with pytest.raises(EncodeError, match="not valid Unicode"):
        PROTOCOL.encode(StreamItemMessage("1", "\ud800"))
    with pytest.raises(EncodeError):
        PROTOCOL.encode(StreamItemMessage("1", {(1, 2): 3}))


def test_encode_refuses_circular_structures():
    loop: list = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        PROTOCOL.encode(StreamItemMessage("1", loop))
