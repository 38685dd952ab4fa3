"""Property-based tests: round trips, arbitrary splits, batching and garbage input."""

from __future__ import annotations

import itertools
import json

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubs.protocol import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubProtocol,
    InvocationMessage,
    JsonHubProtocol,
    MessagePackHubProtocol,
    PingMessage,
    ProtocolError,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from hubs.protocol.varint import encode_varint

PROTOCOLS: list[HubProtocol] = [JsonHubProtocol(), MessagePackHubProtocol()]
LIMIT = 1 << 20
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

texts = st.text(max_size=20)
ids = st.text(min_size=1, max_size=10)
headers = st.none() | st.dictionaries(texts, texts, min_size=1, max_size=3)
stream_ids = st.none() | st.lists(ids, min_size=1, max_size=3)
scalars = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
arguments = st.lists(json_values, max_size=4)


def messages(values: st.SearchStrategy) -> st.SearchStrategy:
    completions = st.one_of(
        st.builds(CompletionMessage.with_result, ids, values),
        st.builds(CompletionMessage.with_error, ids, texts),
        st.builds(CompletionMessage.empty, ids),
    ).flatmap(
        lambda c: headers.map(
            lambda h: CompletionMessage(c.invocation_id, c.result, c.error, c.has_result, h)
        )
    )
    return st.one_of(
        st.builds(
            InvocationMessage,
            texts,
            st.lists(values, max_size=4),
            st.none() | ids,
            stream_ids,
            headers,
        ),
        st.builds(StreamInvocationMessage, texts, st.lists(values, max_size=4), ids, stream_ids, headers),
        st.builds(StreamItemMessage, ids, values, headers),
        completions,
        st.builds(CancelInvocationMessage, ids, headers),
        st.just(PingMessage()),
        st.builds(CloseMessage, st.none() | texts, st.booleans()),
        st.builds(AckMessage, INT64),
        st.builds(SequenceMessage, INT64),
    )


# msgpack additionally carries binary data.
msgpack_values = st.recursive(
    scalars | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
CASES = [(PROTOCOLS[0], messages(json_values)), (PROTOCOLS[1], messages(msgpack_values))]


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed_all(protocol: HubProtocol, parts: list[bytes]) -> list:
    decoder = protocol.decoder(LIMIT)
    out = []
    for part in parts:
        out.extend(decoder.feed(part))
    return out


@given(st.data())
def test_round_trip_single_message(data):
    for protocol, strategy in CASES:
        message = data.draw(strategy)
        assert protocol.decoder(LIMIT).feed(protocol.encode(message)) == [message]


@given(st.data(), st.lists(st.integers(min_value=0), max_size=8))
def test_round_trip_batches_split_at_random_positions(data, cuts):
    for protocol, strategy in CASES:
        batch = data.draw(st.lists(strategy, min_size=1, max_size=6))
        wire = protocol.encode_many(batch)
        assert wire == b"".join(protocol.encode(m) for m in batch)
        assert feed_all(protocol, chunks(wire, cuts)) == batch


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_round_trip_split_at_every_byte(data):
    for protocol, strategy in CASES:
        batch = data.draw(st.lists(strategy, min_size=1, max_size=3))
        wire = protocol.encode_many(batch)
        for cut in range(len(wire) + 1):
            assert feed_all(protocol, [wire[:cut], wire[cut:]]) == batch
        assert feed_all(protocol, [wire[i : i + 1] for i in range(len(wire))]) == batch


@given(st.lists(messages(json_values), min_size=1, max_size=4), st.lists(st.integers(0), max_size=5))
def test_json_text_frames_split_at_random_characters(batch, cuts):
    protocol = PROTOCOLS[0]
    text = protocol.encode_many(batch).decode("utf-8")
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    decoder = protocol.decoder(LIMIT)
    out = []
    for a, b in itertools.pairwise(points):
        out.extend(decoder.feed(text[a:b]))
    assert out == batch


@given(st.data())
def test_record_limit_holds_exactly(data):
    for protocol, strategy in CASES:
        message = data.draw(strategy)
        wire = protocol.encode(message)
        assert protocol.decoder(len(wire)).feed(wire) == [message]
        with pytest.raises(ProtocolError, match="maximum message size"):
            protocol.decoder(len(wire) - 1).feed(wire)


def _decode_or_protocol_error(protocol: HubProtocol, parts: list[bytes], limit: int) -> None:
    """Feed ``parts``; anything but a ProtocolError with a message fails the test."""
    decoder = protocol.decoder(limit)
    message = None
    try:
        for part in parts:
            decoder.feed(part)
    except ProtocolError as exc:
        message = str(exc)
    assert message is None or message


@settings(max_examples=300)
@given(st.binary(max_size=200), st.lists(st.integers(0), max_size=4), st.sampled_from([8, 64, 4096]))
def test_garbage_bytes_raise_only_protocol_errors(blob, cuts, limit):
    for protocol in PROTOCOLS:
        _decode_or_protocol_error(protocol, chunks(blob, cuts), limit)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_garbage_text_raises_only_protocol_errors(text):
    _decode_or_protocol_error(PROTOCOLS[0], [text.encode("utf-8", "surrogatepass")], 4096)
    _decode_or_protocol_error(PROTOCOLS[0], [text + "\x1e"], 4096)


any_values = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats() | texts | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
json_keys = st.sampled_from(
    [
        "type",
        "invocationId",
        "target",
        "arguments",
        "streamIds",
        "headers",
        "item",
        "result",
        "error",
        "allowReconnect",
        "sequenceId",
    ]
)


@settings(max_examples=250)
@given(
    st.integers(min_value=-1, max_value=10),
    st.dictionaries(json_keys, any_values.filter(lambda v: not isinstance(v, bytes)), max_size=8),
)
def test_json_records_with_wrong_field_types(message_type, fields):
    record = {**fields, "type": message_type} if message_type >= 0 else fields
    wire = json.dumps(record, default=repr).encode() + b"\x1e"
    _decode_or_protocol_error(PROTOCOLS[0], [wire], LIMIT)


@settings(max_examples=250)
@given(st.integers(min_value=-1, max_value=10), st.lists(any_values, max_size=7))
def test_msgpack_records_with_wrong_field_types(message_type, fields):
    body = msgpack.packb([message_type, *fields] if message_type >= 0 else fields)
    _decode_or_protocol_error(PROTOCOLS[1], [encode_varint(len(body)) + body], LIMIT)


@settings(max_examples=300)
@given(st.sampled_from([1, 2, 4, 8, 12, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_msgpack_arbitrary_timestamp_payloads(payload):
    fixext = {1: b"\xd4", 2: b"\xd5", 4: b"\xd6", 8: b"\xd7", 16: b"\xd8"}
    header = fixext.get(len(payload), b"\xc7" + bytes([len(payload)]))
    ext = header + b"\xff" + payload  # extension type -1 (timestamp)
    body = b"\x94\x02\x80\xa1\x31" + ext
    _decode_or_protocol_error(PROTOCOLS[1], [encode_varint(len(body)) + body], LIMIT)
