"""Incremental decoder for the JSON hub protocol (records end with 0x1E)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

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

RECORD_SEPARATOR = 0x1E
_MISSING = object()


def _reject_constant(name: str) -> float:
    raise InvalidMessageError(f"'{name}' is not valid JSON.")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidMessageError(f"The number {text[:32]} is out of range.")
    return value


def _required(record: dict[str, Any], key: str) -> Any:
    value = record.get(key, _MISSING)
    if value is _MISSING:
        raise InvalidMessageError(f"Missing required property '{key}'.")
    return value


def _invocation(record: dict[str, Any]) -> InvocationMessage:
    return InvocationMessage(
        target=require_str(_required(record, "target"), "target"),
        arguments=require_list(_required(record, "arguments"), "arguments"),
        invocation_id=optional_id(record.get("invocationId"), "invocationId"),
        stream_ids=optional_str_list(record.get("streamIds"), "streamIds"),
        headers=optional_headers(record.get("headers"), "headers"),
    )


def _stream_invocation(record: dict[str, Any]) -> StreamInvocationMessage:
    return StreamInvocationMessage(
        target=require_str(_required(record, "target"), "target"),
        arguments=require_list(_required(record, "arguments"), "arguments"),
        invocation_id=require_id(record.get("invocationId"), "invocationId"),
        stream_ids=optional_str_list(record.get("streamIds"), "streamIds"),
        headers=optional_headers(record.get("headers"), "headers"),
    )


def _stream_item(record: dict[str, Any]) -> StreamItemMessage:
    return StreamItemMessage(
        invocation_id=require_id(record.get("invocationId"), "invocationId"),
        item=_required(record, "item"),
        headers=optional_headers(record.get("headers"), "headers"),
    )


def _completion(record: dict[str, Any]) -> CompletionMessage:
    invocation_id = require_id(record.get("invocationId"), "invocationId")
    headers = optional_headers(record.get("headers"), "headers")
    error = optional_str(record.get("error"), "error")
    has_result = "result" in record
    if error is not None:
        if has_result:
            raise InvalidMessageError("The 'error' and 'result' properties are mutually exclusive.")
        return CompletionMessage(invocation_id, error=error, headers=headers)
    return CompletionMessage(
        invocation_id, result=record.get("result"), has_result=has_result, headers=headers
    )


def _cancel(record: dict[str, Any]) -> CancelInvocationMessage:
    return CancelInvocationMessage(
        invocation_id=require_id(record.get("invocationId"), "invocationId"),
        headers=optional_headers(record.get("headers"), "headers"),
    )


def _ping(record: dict[str, Any]) -> PingMessage:
    return PingMessage()


def _close(record: dict[str, Any]) -> CloseMessage:
    return CloseMessage(
        error=optional_str(record.get("error"), "error"),
        allow_reconnect=optional_bool(record.get("allowReconnect"), "allowReconnect"),
    )


def _ack(record: dict[str, Any]) -> AckMessage:
    return AckMessage(require_int(_required(record, "sequenceId"), "sequenceId"))


def _sequence(record: dict[str, Any]) -> SequenceMessage:
    return SequenceMessage(require_int(_required(record, "sequenceId"), "sequenceId"))


_BUILDERS: dict[int, Callable[[dict[str, Any]], HubMessage]] = {
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


#: One decoder for every record (``json.loads`` with hooks would build a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)


def parse_json_record(payload: bytes) -> HubMessage | None:
    """Decode one record (without its separator); None for an unknown message type."""
    try:
        text = payload.decode("utf-8")
        record = _DECODER.decode(text)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidMessageError(f"Message is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(record, dict):
        raise InvalidMessageError("Expected the message to be a JSON object.")
    if payload.count(b"[") + payload.count(b"{") > MAX_DEPTH:
        check_depth(record)
    message_type = require_int(_required(record, "type"), "type")
    builder = _BUILDERS.get(message_type)
    return builder(record) if builder is not None else None


class JsonMessageDecoder:
    """Splits incoming data on 0x1E and decodes each complete record."""

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
            try:
                data = data.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidMessageError("Message text is not valid Unicode.") from None
        buffer = self._buffer
        search_from = len(buffer)
        buffer += data
        messages: list[HubMessage] = []
        start = 0
        while True:
            end = buffer.find(RECORD_SEPARATOR, search_from)
            if end < 0:
                break
            if end - start + 1 > self._limit:
                raise MessageTooLargeError(self._limit)
            message = parse_json_record(bytes(buffer[start:end]))
            if message is not None:
                messages.append(message)
            start = search_from = end + 1
        if start:
            del buffer[:start]
        if len(buffer) >= self._limit:
            raise MessageTooLargeError(self._limit)
        return messages
