"""The MessagePack hub protocol: each record is a LEB128 length then a msgpack array."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from .errors import EncodeError
from .hub_protocol import MAX_VERSION
from .messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from .msgpack_decoder import (
    RESULT_KIND_ERROR,
    RESULT_KIND_NON_VOID,
    RESULT_KIND_VOID,
    MessagePackMessageDecoder,
)
from .varint import encode_varint
from .wire_values import msgpack_default


def to_msgpack_array(message: HubMessage) -> list[Any]:
    """The msgpack array for ``message``, in the layout ASP.NET writes."""
    match message:
        case InvocationMessage() | StreamInvocationMessage():
            return [
                int(message.message_type),
                message.headers or {},
                message.invocation_id,
                message.target,
                message.arguments,
                message.stream_ids or [],
            ]
        case StreamItemMessage():
            return [2, message.headers or {}, message.invocation_id, message.item]
        case CompletionMessage():
            head = [3, message.headers or {}, message.invocation_id]
            if message.error is not None:
                return [*head, RESULT_KIND_ERROR, message.error]
            if message.has_result:
                return [*head, RESULT_KIND_NON_VOID, message.result]
            return [*head, RESULT_KIND_VOID]
        case CancelInvocationMessage():
            return [5, message.headers or {}, message.invocation_id]
        case PingMessage():
            return [6]
        case CloseMessage():
            return [7, message.error, message.allow_reconnect]
        case AckMessage():
            return [8, message.sequence_id]
        case SequenceMessage():
            return [9, message.sequence_id]
        case _:
            raise TypeError(f"Not a hub message: {type(message).__name__}.")


def packb(value: object) -> bytes:
    """Pack with binary types and timestamps; raises EncodeError on failure."""
    try:
        return msgpack.packb(value, use_bin_type=True, datetime=True, default=msgpack_default)
    except EncodeError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise EncodeError(f"Cannot encode message as MessagePack: {exc}") from exc


class MessagePackHubProtocol:
    """Codec for ``{"protocol": "messagepack"}``; records are sent in binary frames."""

    name = "messagepack"
    transfer_format = "Binary"

    def is_version_supported(self, version: int) -> bool:
        """Any version up to 2, as ASP.NET's ``version <= Version``: 0 and 1 too."""
        return version <= MAX_VERSION

    def decoder(self, max_message_size: int) -> MessagePackMessageDecoder:
        """A per-connection decoder limiting each framed record to ``max_message_size``."""
        return MessagePackMessageDecoder(max_message_size)

    def encode(self, message: HubMessage) -> bytes:
        """One record: varint length prefix followed by the msgpack body."""
        body = packb(to_msgpack_array(message))
        return encode_varint(len(body)) + body

    def encode_many(self, messages: Iterable[HubMessage]) -> bytes:
        """Several whole records concatenated, for one frame."""
        return b"".join(self.encode(message) for message in messages)
