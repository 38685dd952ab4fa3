"""Exceptions raised while decoding or encoding SignalR hub protocol data."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Root of every error caused by data received from a client."""


class InvalidMessageError(ProtocolError):
    """A record is malformed: bad framing, bad syntax, wrong types or missing fields."""


class MessageTooLargeError(ProtocolError):
    """A single record is larger than the configured maximum message size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"The maximum message size of {limit}B was exceeded. "
            "The message size can be configured in AddHubOptions."
        )


class HandshakeError(ProtocolError):
    """The handshake failed; ``str(error)`` is the text to send back to the client."""

    def __init__(self, error: str, detail: str | None = None) -> None:
        self.error = error
        self.detail = detail
        super().__init__(error)


class EncodeError(ValueError):
    """An outgoing message cannot be encoded (NaN, Infinity, bad strings, deep nesting)."""


class UnsupportedTypeError(EncodeError, TypeError):
    """An outgoing value has a type the hub protocol cannot represent."""

    def __init__(self, value: object) -> None:
        self.value = value
        kind = type(value)
        super().__init__(
            f"Object of type {kind.__module__}.{kind.__qualname__} cannot be sent "
            "over the hub protocol; convert it to a JSON-compatible value first."
        )
