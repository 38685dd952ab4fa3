"""Malformed, truncated and oversized input must raise only ProtocolError subclasses."""

from __future__ import annotations

import msgpack
import pytest

from hubs.protocol import (
    InvalidMessageError,
    JsonHubProtocol,
    MessagePackHubProtocol,
    MessageTooLargeError,
    PingMessage,
    ProtocolError,
)
from hubs.protocol.varint import encode_varint

JSON = JsonHubProtocol()
MSGPACK = MessagePackHubProtocol()
TOO_LARGE = (
    r"^The maximum message size of {}B was exceeded\. "
    r"The message size can be configured in AddHubOptions\.$"
)


def json_feed(data: bytes | str, limit: int = 32 * 1024) -> list:
    return JSON.decoder(limit).feed(data)


def framed(value: object) -> bytes:
    body = value if isinstance(value, bytes) else msgpack.packb(value)
    return encode_varint(len(body)) + body


def msgpack_feed(data: bytes | str, limit: int = 32 * 1024) -> list:
    return MSGPACK.decoder(limit).feed(data)


# --- JSON -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            '{"type":1,"target":5,"arguments":[]}',
            "Expected 'target' to be a string, got an integer.",
        ),
        ('{"type":1,"arguments":[]}', "Missing required property 'target'."),
        ('{"type":1,"target":"t"}', "Missing required property 'arguments'."),
        (
            '{"type":1,"target":"t","arguments":{}}',
            "Expected 'arguments' to be an array, got an object.",
        ),
        (
            '{"type":1,"target":"t","arguments":"x"}',
            "Expected 'arguments' to be an array, got a string.",
        ),
        (
            '{"type":1,"target":"t","arguments":[],"invocationId":1}',
            "'invocationId' to be a string, got an integer",
        ),
        ('{"type":1,"target":"t","arguments":[],"streamIds":"1"}', "'streamIds' to be an array"),
        ('{"type":1,"target":"t","arguments":[],"streamIds":[1]}', "'streamIds[]' to be a string"),
        (
            '{"type":1,"target":"t","arguments":[],"headers":[]}',
            "'headers' to be an object of strings, got an array",
        ),
        (
            '{"type":1,"target":"t","arguments":[],"headers":{"a":1}}',
            "'headers['a']' to be a string",
        ),
        ('{"type":4,"target":"t","arguments":[]}', "Missing required property 'invocationId'."),
        (
            '{"type":4,"target":"t","arguments":[],"invocationId":""}',
            "Missing required property 'invocationId'.",
        ),
        ('{"type":2,"item":1}', "Missing required property 'invocationId'."),
        ('{"type":2,"invocationId":"1"}', "Missing required property 'item'."),
        ('{"type":2,"invocationId":true,"item":1}', "'invocationId' to be a string, got a boolean"),
        ('{"type":3,"invocationId":"1","result":1,"error":"x"}', "mutually exclusive"),
        ('{"type":3,"invocationId":"1","error":5}', "'error' to be a string, got an integer"),
        ('{"type":3}', "Missing required property 'invocationId'."),
        ('{"type":5,"invocationId":[]}', "'invocationId' to be a string, got an array"),
        ('{"type":7,"error":1}', "'error' to be a string"),
        ('{"type":7,"allowReconnect":"yes"}', "'allowReconnect' to be a boolean, got a string"),
        ('{"type":8}', "Missing required property 'sequenceId'."),
        ('{"type":8,"sequenceId":"1"}', "'sequenceId' to be an integer, got a string"),
        ('{"type":9,"sequenceId":1.5}', "'sequenceId' to be an integer, got a number"),
        ('{"type":9,"sequenceId":true}', "'sequenceId' to be an integer, got a boolean"),
        ('{"target":"t"}', "Missing required property 'type'."),
        ('{"type":"1"}', "Expected 'type' to be an integer, got a string."),
        ('{"type":null}', "Expected 'type' to be an integer, got null."),
        ('{"type":1.0}', "Expected 'type' to be an integer, got a number."),
        ("[1,2]", "Expected the message to be a JSON object."),
        ('"ping"', "Expected the message to be a JSON object."),
        ("null", "Expected the message to be a JSON object."),
        ("", "not valid UTF-8 JSON"),
        ("not json", "not valid UTF-8 JSON"),
        ('{"type":6', "not valid UTF-8 JSON"),
        ('{"type":6}}', "not valid UTF-8 JSON"),
        ('{"type":2,"invocationId":"1","item":NaN}', "'NaN' is not valid JSON."),
        ('{"type":2,"invocationId":"1","item":-Infinity}', "'-Infinity' is not valid JSON."),
        ('{"type":2,"invocationId":"1","item":1e999}', "out of range"),
        ('{"type":2,"invocationId":"1","item":' + "9" * 5000 + "}", "not valid UTF-8 JSON"),
    ],
)
def test_json_invalid_records(record, expected):
    with pytest.raises(InvalidMessageError) as info:
        json_feed(record + "\x1e")
    assert expected in str(info.value)


def test_json_invalid_utf8():
    with pytest.raises(InvalidMessageError, match="UTF-8"):
        json_feed(b'{"type":2,"invocationId":"1","item":"\xff\xfe"}\x1e')


def test_json_lone_surrogate_text():
    with pytest.raises(InvalidMessageError):
        json_feed('{"type":6}\ud800\x1e')


def test_json_error_after_valid_records_still_raises():
    with pytest.raises(InvalidMessageError):
        json_feed('{"type":6}\x1e{"type":1}\x1e')


@pytest.mark.parametrize("depth", [64, 200, 5000, 100_000])
def test_json_deep_nesting_is_bounded(depth):
    # The record object is level 1, so an item nested 64 deep makes 65 levels.
    item = "[" * depth + "]" * depth
    record = '{"type":2,"invocationId":"1","item":' + item + "}\x1e"
    with pytest.raises(InvalidMessageError, match=r"maximum depth|not valid"):
        JSON.decoder(1 << 20).feed(record)


def test_json_nesting_at_the_limit_is_accepted():
    item = "[" * 63 + "]" * 63
    assert json_feed('{"type":2,"invocationId":"1","item":' + item + "}\x1e")
    wide = "[" + ",".join(["{}"] * 1000) + "]"
    assert json_feed('{"type":2,"invocationId":"1","item":' + wide + "}\x1e")


def test_json_record_limit_includes_separator():
    record = b'{"type":6}\x1e'
    assert json_feed(record, limit=len(record)) == [PingMessage()]
    with pytest.raises(MessageTooLargeError, match=TOO_LARGE.format(len(record) - 1)) as info:
        json_feed(record, limit=len(record) - 1)
    assert info.value.limit == len(record) - 1


def test_json_limit_is_per_record_not_per_frame():
    frame = b'{"type":6}\x1e' * 100
    assert len(json_feed(frame, limit=11)) == 100


def test_json_unterminated_tail_over_limit_fails_early():
    decoder = JSON.decoder(100)
    assert decoder.feed(b'{"type":6}\x1e' + b" " * 50) == [PingMessage()]
    with pytest.raises(MessageTooLargeError):
        decoder.feed(b" " * 50)


def test_json_decoder_rejects_bad_limit():
    with pytest.raises(ValueError, match="must be positive"):
        JSON.decoder(0)


# --- MessagePack ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, {}, "1", 5, []], "Expected 'target' to be a string, got an integer."),
        ([1, {}, "1", "t", {}], "Expected 'arguments' to be an array, got an object."),
        ([1, {}, 7, "t", []], "'invocationId' to be a string, got an integer"),
        ([1, {}, "1", "t", [], "x"], "'streamIds' to be an array"),
        ([1, {}, "1", "t", [], [1]], "'streamIds[]' to be a string"),
        ([1, [], "1", "t", []], "'headers' to be an object of strings, got an array"),
        ([1, {"a": b"x"}, "1", "t", []], "'headers['a']' to be a string, got binary data"),
        ([1, {b"a": "x"}, "1", "t", []], "'headers key' to be a string, got binary data"),
        ([1, {}, "1", "t"], "Expected at least 5 elements in a Invocation message, got 4."),
        ([4, {}, None, "t", []], "Missing required property 'invocationId'."),
        ([4, {}, "", "t", []], "Missing required property 'invocationId'."),
        ([2, {}, "1"], "at least 4 elements"),
        ([2, {}, None, 1], "Missing required property 'invocationId'."),
        ([3, {}, "1"], "at least 4 elements"),
        ([3, {}, "1", 1], "at least 5 elements in a Completion with an error message"),
        ([3, {}, "1", 3], "at least 5 elements in a Completion with a result message"),
        ([3, {}, "1", 4, 1], "Expected 'resultKind' to be 1, 2 or 3, got 4."),
        ([3, {}, "1", "3", 1], "'resultKind' to be an integer, got a string"),
        ([3, {}, "1", 1, None], "Expected 'error' to be a string, got null."),
        ([5, {}], "at least 3 elements"),
        ([5, {}, 1], "'invocationId' to be a string"),
        ([7], "at least 2 elements"),
        ([7, 1], "'error' to be a string"),
        ([7, None, 1], "'allowReconnect' to be a boolean, got an integer"),
        ([8], "at least 2 elements"),
        ([8, "1"], "'sequenceId' to be an integer, got a string"),
        ([9, 1.0], "'sequenceId' to be an integer, got a number"),
        ([], "non-empty MessagePack array"),
        ({"type": 6}, "non-empty MessagePack array"),
        (6, "non-empty MessagePack array"),
        (["6"], "Expected 'type' to be an integer, got a string."),
        ([True], "Expected 'type' to be an integer, got a boolean."),
        ([None], "Expected 'type' to be an integer, got null."),
    ],
)
def test_msgpack_invalid_records(value, expected):
    with pytest.raises(InvalidMessageError) as info:
        msgpack_feed(framed(value))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "not valid MessagePack"),
        (b"\xc1", "not valid MessagePack"),
        (b"\x91", "not valid MessagePack"),
        (b"\x91\x06\x06", "not valid MessagePack"),
        (b"\x92\x06\xa2\xff\xfe", "not valid MessagePack"),
        (b"\x92\x06\xdd\xff\xff\xff\xff", "not valid MessagePack"),
        (b"\x92\x06\x81\x91\x01\x02", "not valid MessagePack"),
        (b"\x92\x06\xd4\x05\x00", "Unsupported MessagePack extension type 5."),
        (b"\x92\x06\xc7\x0c\xff" + b"\x00\x00\x00\x00" + b"\x3f" + b"\xff" * 7, "not valid"),
        (b"\x92\x06\xc7\x0c\xff" + b"\x00\x00\x00\x00" + b"\xc0" + b"\x00" * 7, "not valid"),
        (b"\x92\x06\xd5\xff\x00\x00", "not valid MessagePack"),
    ],
)
def test_msgpack_invalid_bodies(body, expected):
    with pytest.raises(InvalidMessageError) as info:
        msgpack_feed(framed(body))
    assert expected in str(info.value)


def test_msgpack_text_frame_is_rejected():
    with pytest.raises(InvalidMessageError, match="binary frame"):
        msgpack_feed("\x02\x91\x06")


def test_msgpack_attacker_declared_huge_length_fails_before_body():
    decoder = MSGPACK.decoder(32 * 1024)
    with pytest.raises(MessageTooLargeError, match=TOO_LARGE.format(32 * 1024)):
        decoder.feed(b"\xff\xff\xff\xff\x07\x91")  # declares ~2 GiB, sends 1 byte
    assert decoder.buffered == 0


def test_msgpack_limit_includes_prefix():
    frame = b"\x02\x91\x06"
    assert msgpack_feed(frame, limit=3) == [PingMessage()]
    with pytest.raises(MessageTooLargeError):
        msgpack_feed(frame, limit=2)
    assert len(msgpack_feed(frame * 50, limit=3)) == 50


def test_msgpack_bad_length_prefix():
    with pytest.raises(InvalidMessageError, match=r"^Cannot read message size\.$"):
        msgpack_feed(b"\x80\x80\x80\x80\x80\x01")
    decoder = MSGPACK.decoder(100)
    assert decoder.feed(b"\x80\x80\x80\x80") == []
    with pytest.raises(InvalidMessageError, match="Cannot read message size"):
        decoder.feed(b"\x80")


def test_msgpack_truncated_record_waits_then_completes():
    decoder = MSGPACK.decoder(100)
    assert decoder.feed(b"\x02\x91") == []
    assert decoder.feed(b"\x06") == [PingMessage()]


@pytest.mark.parametrize("depth", [64, 1000, 5000, 100_000])
def test_msgpack_deep_nesting_is_bounded(depth):
    body = b"\x94\x02\x80\xa1\x31" + b"\x91" * depth + b"\xc0"
    with pytest.raises(InvalidMessageError, match=r"maximum depth|not valid"):
        msgpack_feed(framed(body), limit=1 << 20)


def test_msgpack_nesting_at_the_limit_is_accepted():
    body = b"\x94\x02\x80\xa1\x31" + b"\x91" * 63 + b"\xc0"
    assert msgpack_feed(framed(body))


def test_protocol_error_hierarchy():
    assert issubclass(InvalidMessageError, ProtocolError)
    assert issubclass(MessageTooLargeError, ProtocolError)
    assert issubclass(ProtocolError, ValueError)
