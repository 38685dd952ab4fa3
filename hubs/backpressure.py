"""What a connection's ASGI server holds for it that the client has not read yet, and how to drop
the connection when it never will: the two facts a bounded outbound queue needs that ASGI does
not give.

``transport_of(send)`` recognises the servers Conduit RT supports by their ``send`` callable and
answers a ``Transport`` (``backlog()`` in bytes, ``abort()``), or None for another server (the
Channels test communicator, say): then only what the hub itself queues is counted.

- daphne writes every message into the Twisted transport at once and never waits, so its buffer
  is where a slow client's backlog grows (``send`` is ``partial(server.handle_reply, protocol)``).
- uvicorn's ``send`` waits while the asyncio transport is over its high-water mark, so the
  backlog is the transport's buffer plus what the hub queued behind that wait.
"""

from __future__ import annotations

import functools
import logging
import socket
import struct
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Transport(Protocol):
    def backlog(self) -> int:
        """Bytes written and not yet taken by the client's socket."""
        ...

    def abort(self) -> None:
        """Drop the connection at once, discarding what is buffered."""
        ...


class _TwistedTransport:
    """daphne's: a Twisted ``FileDescriptor`` (its ``dataBuffer`` from ``offset`` on, plus the
    pieces not yet joined into it)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def backlog(self) -> int:
        t = self._transport
        return len(t.dataBuffer) - t.offset + t._tempDataLen

    def abort(self) -> None:
        self._transport.abortConnection()


class _AsyncioTransport:
    """uvicorn's: an asyncio transport."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def backlog(self) -> int:
        return int(self._transport.get_write_buffer_size())

    def abort(self) -> None:
        # As Twisted's abortConnection: SO_LINGER 0, so the close sends a reset and the kernel
        # drops what the client never read. Without it the FIN waits behind those bytes, and a
        # client that does not read never learns that its connection ended.
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError as exc:  # the socket is already gone: the abort below is all there is
                logger.debug("Could not set SO_LINGER before an abort: %s", exc)
        self._transport.abort()


def transport_of(send: Any) -> Transport | None:
    """The transport behind an ASGI ``send`` of daphne or uvicorn; None for anything else."""
    if isinstance(send, functools.partial) and send.args:  # daphne
        transport = getattr(send.args[0], "transport", None)
        if transport is not None and all(
            hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen", "abortConnection")
        ):
            return _TwistedTransport(transport)
        return None
    transport = getattr(getattr(send, "__self__", None), "transport", None)  # uvicorn
    if transport is not None and hasattr(transport, "get_write_buffer_size") and hasattr(transport, "abort"):
        return _AsyncioTransport(transport)
    return None
