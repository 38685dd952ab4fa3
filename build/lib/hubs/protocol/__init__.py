"""Server side of the ASP.NET Core SignalR hub protocol (JSON and MessagePack), no Django."""

from __future__ import annotations

from .errors import (
    EncodeError,
    HandshakeError,
    InvalidMessageError,
    MessageTooLargeError,
    ProtocolError,
    UnsupportedTypeError,
)
from .handshake import HandshakeParser, HandshakeRequest, handshake_response
from .hub_protocol import HubProtocol, MessageDecoder
from .json_protocol import JsonHubProtocol
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
from .msgpack_protocol import MessagePackHubProtocol
from .registry import get_protocol, select_protocol, supported_protocols

__all__ = [
    "AckMessage",
    "CancelInvocationMessage",
    "CloseMessage",
    "CompletionMessage",
    "EncodeError",
    "HandshakeError",
    "HandshakeParser",
    "HandshakeRequest",
    "HubMessage",
    "HubProtocol",
    "InvalidMessageError",
    "InvocationMessage",
    "JsonHubProtocol",
    "MessageDecoder",
    "MessagePackHubProtocol",
    "MessageTooLargeError",
    "MessageType",
    "PingMessage",
    "ProtocolError",
    "SequenceMessage",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "UnsupportedTypeError",
    "get_protocol",
    "handshake_response",
    "select_protocol",
    "supported_protocols",
]
