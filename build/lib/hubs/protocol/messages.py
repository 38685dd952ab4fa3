"""Hub message types shared by every hub protocol codec."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar


class MessageType(IntEnum):
    """The ``type`` discriminator of a hub message record."""

    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


@dataclass(frozen=True, slots=True)
class InvocationMessage:
    """Call a method on the other side; no ``invocation_id`` means no reply is expected."""

    message_type: ClassVar[MessageType] = MessageType.INVOCATION

    target: str
    arguments: list[Any]
    invocation_id: str | None = None
    stream_ids: list[str] | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class StreamInvocationMessage:
    """Call a streaming method; results arrive as stream items and then a completion."""

    message_type: ClassVar[MessageType] = MessageType.STREAM_INVOCATION

    target: str
    arguments: list[Any]
    invocation_id: str
    stream_ids: list[str] | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class StreamItemMessage:
    """One item of a stream, in either direction."""

    message_type: ClassVar[MessageType] = MessageType.STREAM_ITEM

    invocation_id: str
    item: Any
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class CompletionMessage:
    """End of an invocation or stream: a result, an error, or neither."""

    message_type: ClassVar[MessageType] = MessageType.COMPLETION

    invocation_id: str
    result: Any = None
    error: str | None = None
    has_result: bool = False
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.error is not None and self.has_result:
            raise ValueError("A completion cannot carry both a result and an error.")
        if self.result is not None and not self.has_result:
            raise ValueError(
                "A completion with a result needs has_result=True; use CompletionMessage.with_result()."
            )

    @classmethod
    def with_result(cls, invocation_id: str, value: Any) -> CompletionMessage:
        """Completion carrying ``value`` (which may be ``None``) as the result."""
        return cls(invocation_id, result=value, has_result=True)

    @classmethod
    def with_error(cls, invocation_id: str, error: str) -> CompletionMessage:
        """Completion reporting ``error`` to the caller."""
        return cls(invocation_id, error=error)

    @classmethod
    def empty(cls, invocation_id: str) -> CompletionMessage:
        """Completion with neither result nor error (end of a stream)."""
        return cls(invocation_id)


@dataclass(frozen=True, slots=True)
class CancelInvocationMessage:
    """Ask the other side to stop a stream or invocation."""

    message_type: ClassVar[MessageType] = MessageType.CANCEL_INVOCATION

    invocation_id: str
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PingMessage:
    """Keep-alive; carries nothing."""

    message_type: ClassVar[MessageType] = MessageType.PING


@dataclass(frozen=True, slots=True)
class CloseMessage:
    """The sender is closing the connection, optionally with an error."""

    message_type: ClassVar[MessageType] = MessageType.CLOSE

    error: str | None = None
    allow_reconnect: bool = False


@dataclass(frozen=True, slots=True)
class AckMessage:
    """Stateful reconnect: every trackable message up to ``sequence_id`` was received."""

    message_type: ClassVar[MessageType] = MessageType.ACK

    sequence_id: int


@dataclass(frozen=True, slots=True)
class SequenceMessage:
    """Stateful reconnect: the next replayed message has ``sequence_id``."""

    message_type: ClassVar[MessageType] = MessageType.SEQUENCE

    sequence_id: int


HubMessage = (
    InvocationMessage
    | StreamInvocationMessage
    | StreamItemMessage
    | CompletionMessage
    | CancelInvocationMessage
    | PingMessage
    | CloseMessage
    | AckMessage
    | SequenceMessage
)
