"""The interface every hub protocol codec and its per-connection decoder implement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from .messages import HubMessage

#: The version of both protocols (JSON and MessagePack), as ASP.NET Core 8+ declares them
#: (``ProtocolVersion = 2``, 2 adding the stateful-reconnect messages). Like its
#: ``IsVersionSupported`` (``version <= Version``), any version up to this one is accepted:
#: clients that ask for 0 (signalrcore's default JSON handshake) or 1 included.
MAX_VERSION = 2


@runtime_checkable
class MessageDecoder(Protocol):
    """Incremental, per-connection decoder of incoming hub records."""

    def feed(self, data: bytes | str) -> list[HubMessage]:
        """Decode every complete record in the buffered data plus ``data``.

        A partial trailing record stays buffered until a later call completes it.
        Records of unknown type are skipped. Raises only ProtocolError subclasses;
        after one is raised the connection must be closed.
        """
        ...


@runtime_checkable
class HubProtocol(Protocol):
    """A stateless hub protocol codec ("json" or "messagepack")."""

    name: str
    transfer_format: str

    def is_version_supported(self, version: int) -> bool:
        """Whether the handshake ``version`` is acceptable: any up to ``MAX_VERSION``, as ASP.NET."""
        ...

    def decoder(self, max_message_size: int) -> MessageDecoder:
        """A new decoder enforcing ``max_message_size`` bytes per framed record."""
        ...

    def encode(self, message: HubMessage) -> bytes:
        """One complete record, including its separator or length prefix."""
        ...

    def encode_many(self, messages: Iterable[HubMessage]) -> bytes:
        """Several complete records concatenated, to send as one frame."""
        ...
