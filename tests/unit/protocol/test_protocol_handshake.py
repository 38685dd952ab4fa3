"""Tests for handshake parsing, the handshake response and protocol selection."""

from __future__ import annotations

import pytest

from hubs.protocol import (
    HandshakeError,
    HandshakeParser,
    HandshakeRequest,
    JsonHubProtocol,
    MessagePackHubProtocol,
    PingMessage,
    ProtocolError,
    get_protocol,
    handshake_response,
    select_protocol,
    supported_protocols,
)

FAILED = "An unexpected error occurred during connection handshake."


def test_text_frame_handshake():
    parsed = HandshakeParser().feed('{"protocol":"json","version":1}\x1e')
    assert parsed == (HandshakeRequest("json", 1), b"")


def test_binary_frame_handshake():
    parsed = HandshakeParser().feed(b'{"protocol":"messagepack","version":2}\x1e')
    assert parsed == (HandshakeRequest("messagepack", 2), b"")


def test_handshake_followed_by_json_ping_in_same_frame():
    request, rest = HandshakeParser().feed('{"protocol":"json","version":1}\x1e{"type":6}\x1e')
    assert request == HandshakeRequest("json", 1)
    assert JsonHubProtocol().decoder(1024).feed(rest) == [PingMessage()]


def test_handshake_followed_by_msgpack_ping_in_same_frame():
    frame = b'{"protocol":"messagepack","version":1}\x1e\x02\x91\x06'
    request, rest = HandshakeParser().feed(frame)
    assert request.protocol == "messagepack"
    assert rest == b"\x02\x91\x06"
    assert MessagePackHubProtocol().decoder(1024).feed(rest) == [PingMessage()]


def test_handshake_split_across_frames():
    parser = HandshakeParser()
    assert parser.feed('{"protocol":') is None
    assert parser.feed(b'"json","vers') is None
    assert parser.feed('ion":1, "extra": [1]}\x1eXY') == (HandshakeRequest("json", 1), b"XY")


def test_handshake_unicode_split_inside_character():
    raw = '{"protocol":"jsoné","version":1}\x1e'.encode()
    cut = raw.index(b"\xc3") + 1
    parser = HandshakeParser()
    assert parser.feed(raw[:cut]) is None
    assert parser.feed(raw[cut:]) == (HandshakeRequest("jsoné", 1), b"")


def test_handshake_too_large_without_separator():
    parser = HandshakeParser(max_size=64)
    assert parser.feed(b" " * 63) is None
    with pytest.raises(HandshakeError, match=r"^Handshake was canceled\.$"):
        parser.feed(b" ")


def test_handshake_record_too_large_with_separator():
    record = b'{"protocol":"json","version":1,"pad":"' + b"x" * 100 + b'"}\x1e'
    with pytest.raises(HandshakeError) as info:
        HandshakeParser(max_size=len(record) - 1).feed(record)
    assert info.value.error == "Handshake was canceled."
    assert HandshakeParser(max_size=len(record)).feed(record) is not None


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1,2]",
        b'"json"',
        b"{}",
        b'{"protocol":"json"}',
        b'{"version":1}',
        b'{"protocol":1,"version":1}',
        b'{"protocol":null,"version":1}',
        b'{"protocol":"json","version":"1"}',
        b'{"protocol":"json","version":1.0}',
        b'{"protocol":"json","version":true}',
        b'{"protocol":"json","version":null}',
        b"[" * 5000,
    ],
)
def test_malformed_handshake(record):
    with pytest.raises(HandshakeError) as info:
        HandshakeParser(max_size=100_000).feed(record + b"\x1e")
    assert str(info.value) == FAILED
    assert info.value.error == FAILED
    assert info.value.detail
    assert isinstance(info.value, ProtocolError)


def test_parser_used_twice_is_a_programming_error():
    parser = HandshakeParser()
    parser.feed('{"protocol":"json","version":1}\x1e')
    with pytest.raises(RuntimeError):
        parser.feed("{}")


def test_handshake_response():
    assert handshake_response() == b"{}\x1e"
    assert handshake_response("The protocol 'x' is not supported.") == (
        b'{"error":"The protocol \'x\' is not supported."}\x1e'
    )
    assert handshake_response('quote " é') == '{"error":"quote \\" é"}\x1e'.encode()


def test_get_protocol():
    assert isinstance(get_protocol("json"), JsonHubProtocol)
    assert isinstance(get_protocol("messagepack"), MessagePackHubProtocol)
    assert isinstance(get_protocol("MessagePack"), MessagePackHubProtocol)
    assert supported_protocols() == ("json", "messagepack")
    with pytest.raises(HandshakeError, match=r"^The protocol 'xml' is not supported\.$"):
        get_protocol("xml")


def test_protocol_attributes():
    json_protocol, msgpack_protocol = JsonHubProtocol(), MessagePackHubProtocol()
    assert (json_protocol.name, json_protocol.transfer_format) == ("json", "Text")
    assert (msgpack_protocol.name, msgpack_protocol.transfer_format) == ("messagepack", "Binary")
    for protocol in (json_protocol, msgpack_protocol):
        # ASP.NET's IsVersionSupported is ``version <= Version`` (Version = 2 for both): any
        # lower version is accepted, 0 included (signalrcore's default JSON handshake).
        assert [protocol.is_version_supported(v) for v in (-1, 0, 1, 2, 3, 99)] == [
            True,
            True,
            True,
            True,
            False,
            False,
        ]


def test_select_protocol():
    assert select_protocol(HandshakeRequest("json", 2)).name == "json"
    assert select_protocol(HandshakeRequest("json", 0)).name == "json"
    assert select_protocol(HandshakeRequest("messagepack", 0)).name == "messagepack"
    with pytest.raises(HandshakeError) as info:
        select_protocol(HandshakeRequest("json", 3))
    assert str(info.value) == "The server does not support version 3 of the 'json' protocol."
    with pytest.raises(HandshakeError) as info:
        select_protocol(HandshakeRequest("messagepack", 1), transfer_formats=("Text",))
    assert str(info.value) == (
        "Cannot use the 'messagepack' protocol on the current transport. "
        "The transport does not support 'Binary' transfer format."
    )
