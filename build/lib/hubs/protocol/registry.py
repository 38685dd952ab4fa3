"""Lookup of hub protocols by the name a client sends in its handshake."""

from __future__ import annotations

from .errors import HandshakeError
from .handshake import HandshakeRequest
from .hub_protocol import HubProtocol
from .json_protocol import JsonHubProtocol
from .msgpack_protocol import MessagePackHubProtocol

_PROTOCOLS: dict[str, type[JsonHubProtocol] | type[MessagePackHubProtocol]] = {
    JsonHubProtocol.name: JsonHubProtocol,
    MessagePackHubProtocol.name: MessagePackHubProtocol,
}


def supported_protocols() -> tuple[str, ...]:
    """Names of every protocol this server speaks."""
    return tuple(_PROTOCOLS)


def get_protocol(name: str) -> HubProtocol:
    """The protocol called ``name``, matched case-insensitively as ASP.NET does."""
    factory = _PROTOCOLS.get(name.lower())
    if factory is None:
        raise HandshakeError(f"The protocol '{name}' is not supported.")
    return factory()


def select_protocol(
    request: HandshakeRequest, *, transfer_formats: tuple[str, ...] = ("Text", "Binary")
) -> HubProtocol:
    """Validate a handshake request; raise HandshakeError with ASP.NET's text if unusable."""
    protocol = get_protocol(request.protocol)
    if not protocol.is_version_supported(request.version):
        raise HandshakeError(
            f"The server does not support version {request.version} of the '{protocol.name}' protocol."
        )
    if protocol.transfer_format not in transfer_formats:
        raise HandshakeError(
            f"Cannot use the '{protocol.name}' protocol on the current transport. "
            f"The transport does not support '{protocol.transfer_format}' transfer format."
        )
    return protocol
