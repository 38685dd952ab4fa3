"""Incremental decoder for the MessagePack hub protocol (varint length + body)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from .depth import MAX_DEPTH, check_depth
from .errors import InvalidMessageError, MessageTooLargeError, ProtocolError
from .fields import (
    optional_bool,
    optional_headers,
    optional_id,
    optional_str,
    optional_str_list,
    require_id,
    require_int,
    require_list,
    require_str,
)
from .messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from .varint import read_varint

RESULT_KIND_ERROR = 1
RESULT_KIND_VOID = 2
RESULT_KIND_NON_VOID = 3


def _reject_ext(code: int, data: bytes) -> object:
    raise InvalidMessageError(f"Unsupported MessagePack extension type {code}.")


def _need(items: list[Any], count: int, name: str) -> None:
    if len(items) < count:
        raise InvalidMessageError(
            f"Expected at least {count} elements in a {name} message, got {len(items)}."
        )


def _invocation(items: list[Any]) -> InvocationMessage:
    _need(items, 5, "Invocation")
    return InvocationMessage(
        target=require_str(items[3], "target"),
        arguments=require_list(items[4], "arguments"),
        invocation_id=optional_id(items[2], "invocationId"),
        stream_ids=optional_str_list(items[5], "streamIds") if len(items) > 5 else None,
        headers=optional_headers(items[1], "headers"),
    )


def _stream_invocation(items: list[Any]) -> StreamInvocationMessage:
    _need(items, 5, "StreamInvocation")
    return StreamInvocationMessage(
        target=require_str(items[3], "target"),
        arguments=require_list(items[4], "arguments"),
        invocation_id=require_id(items[2], "invocationId"),
        stream_ids=optional_str_list(items[5], "streamIds") if len(items) > 5 else None,
        headers=optional_headers(items[1], "headers"),
    )


def _stream_item(items: list[Any]) -> StreamItemMessage:
    _need(items, 4, "StreamItem")
    return StreamItemMessage(
        invocation_id=require_id(items[2], "invocationId"),
        item=items[3],
        headers=optional_headers(items[1], "headers"),
    )


def _completion(items: list[Any]) -> CompletionMessage:
    _need(items, 4, "Completion")
    headers = optional_headers(items[1], "headers")
    invocation_id = require_id(items[2], "invocationId")
    kind = require_int(items[3], "resultKind")
    if kind == RESULT_KIND_VOID:
        return CompletionMessage(invocation_id, headers=headers)
    if kind == RESULT_KIND_ERROR:
        _need(items, 5, "Completion with an error")
        return CompletionMessage(invocation_id, error=require_str(items[4], "error"), headers=headers)
    if kind == RESULT_KIND_NON_VOID:
        _need(items, 5, "Completion with a result")
        return CompletionMessage(invocation_id, result=items[4], has_result=True, headers=headers)
    raise InvalidMessageError(f"Expected 'resultKind' to be 1, 2 or 3, got {kind}.")


def _cancel(items: list[Any]) -> CancelInvocationMessage:
    _need(items, 3, "CancelInvocation")
    return CancelInvocationMessage(
        invocation_id=require_id(items[2], "invocationId"),
        headers=optional_headers(items[1], "headers"),
    )


def _ping(items: list[Any]) -> PingMessage:
    return PingMessage()


def _close(items: list[Any]) -> CloseMessage:
    _need(items, 2, "Close")
    return CloseMessage(
        error=optional_str(items[1], "error"),
        allow_reconnect=optional_bool(items[2], "allowReconnect") if len(items) > 2 else False,
    )


def _ack(items: list[Any]) -> AckMessage:
    _need(items, 2, "Ack")
    return AckMessage(require_int(items[1], "sequenceId"))


def _sequence(items: list[Any]) -> SequenceMessage:
    _need(items, 2, "Sequence")
    return SequenceMessage(require_int(items[1], "sequenceId"))


_BUILDERS: dict[int, Callable[[list[Any]], HubMessage]] = {
    MessageType.INVOCATION: _invocation,
    MessageType.STREAM_ITEM: _stream_item,
    MessageType.COMPLETION: _completion,
    MessageType.STREAM_INVOCATION: _stream_invocation,
    MessageType.CANCEL_INVOCATION: _cancel,
    MessageType.PING: _ping,
    MessageType.CLOSE: _close,
    MessageType.ACK: _ack,
    MessageType.SEQUENCE: _sequence,
}


def parse_msgpack_record(body: bytes) -> HubMessage | None:
    """Decode one record body (without its length prefix); None for an unknown type."""
    size = len(body)
    try:
        items = msgpack.unpackb(
            body,
            raw=False,
            timestamp=3,
            ext_hook=_reject_ext,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size,
            max_ext_len=size,
        )
    except ProtocolError:
        raise
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise InvalidMessageError(f"Message is not valid MessagePack: {exc}") from None
    if not isinstance(items, list) or not items:
        raise InvalidMessageError("Expected the message to be a non-empty MessagePack array.")
    if size > MAX_DEPTH:
        check_depth(items)
    builder = _BUILDERS.get(require_int(items[0], "type"))
    return builder(items) if builder is not None else None


class MessagePackMessageDecoder:
    """Reads length-prefixed records and decodes each complete one."""

    def __init__(self, max_message_size: int) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive.")
        self._limit = max_message_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete record waiting for more data."""
        return len(self._buffer)

    def feed(self, data: bytes | str) -> list[HubMessage]:
        """Decode every complete record; keep a partial trailing record buffered."""
        try:
            return self._feed(data)
        except ProtocolError:
            self._buffer.clear()
            raise

    def _feed(self, data: bytes | str) -> list[HubMessage]:
        if isinstance(data, str):
            raise InvalidMessageError(
                "Expected a binary frame for the MessagePack protocol, got a text frame."
            )
        buffer = self._buffer
        buffer += data
        messages: list[HubMessage] = []
        start = 0
        while start < len(buffer):
            prefix = read_varint(buffer, start)
            if prefix is None:
                break
            length, prefix_size = prefix
            if prefix_size + length > self._limit:
                raise MessageTooLargeError(self._limit)
            end = start + prefix_size + length
            if end > len(buffer):
                break
            message = parse_msgpack_record(bytes(buffer[start + prefix_size : end]))
            if message is not None:
                messages.append(message)
            start = end
        if start:
            del buffer[:start]
        return messages
