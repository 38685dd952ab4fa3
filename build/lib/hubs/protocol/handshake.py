"""Parsing the client's handshake request and writing the server's response."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import HandshakeError

RECORD_SEPARATOR = b"\x1e"
DEFAULT_MAX_SIZE = 32 * 1024
HANDSHAKE_CANCELED = "Handshake was canceled."
HANDSHAKE_FAILED = "An unexpected error occurred during connection handshake."


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """The client's ``{"protocol": ..., "version": ...}`` request."""

    protocol: str
    version: int


def _failed(detail: str) -> HandshakeError:
    return HandshakeError(HANDSHAKE_FAILED, detail=detail)


def parse_handshake_request(record: bytes) -> HandshakeRequest:
    """Parse one handshake record (without its separator)."""
    try:
        payload = json.loads(record.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _failed(f"Handshake is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise _failed("Handshake must be a JSON object.")
    protocol = payload.get("protocol")
    if not isinstance(protocol, str):
        raise _failed("Missing required property 'protocol' (a string).")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _failed("Missing required property 'version' (an integer).")
    return HandshakeRequest(protocol=protocol, version=version)


class HandshakeParser:
    """Buffers the start of a connection until the handshake record is complete.

    The handshake may come as a text or binary frame, split over frames, or followed
    by hub records in the same frame. ``max_size`` bounds the record including its
    separator, as ASP.NET's maximum message size does.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive.")
        self._max_size = max_size
        self._buffer = bytearray()
        self._done = False

    def feed(self, data: str | bytes) -> tuple[HandshakeRequest, bytes] | None:
        """Return the request and the bytes after its separator, or None if incomplete."""
        if self._done:
            raise RuntimeError("The handshake has already been parsed.")
        if isinstance(data, str):
            try:
                data = data.encode("utf-8")
            except UnicodeEncodeError:
                raise _failed("Handshake text is not valid Unicode.") from None
        start = len(self._buffer)
        self._buffer += data
        index = self._buffer.find(RECORD_SEPARATOR, start)
        if index < 0:
            if len(self._buffer) >= self._max_size:
                raise HandshakeError(HANDSHAKE_CANCELED, detail="Handshake is too large.")
            return None
        if index + 1 > self._max_size:
            raise HandshakeError(HANDSHAKE_CANCELED, detail="Handshake is too large.")
        request = parse_handshake_request(bytes(self._buffer[:index]))
        rest = bytes(self._buffer[index + 1 :])
        self._buffer.clear()
        self._done = True
        return request, rest


def handshake_response(error: str | None = None) -> bytes:
    """The server's reply: ``{}`` on success, ``{"error": ...}`` on failure, plus 0x1E."""
    if error is None:
        return b"{}" + RECORD_SEPARATOR
    body = json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":"))
    return body.encode("utf-8", "replace") + RECORD_SEPARATOR
