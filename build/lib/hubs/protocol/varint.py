"""LEB128 length prefix used to frame MessagePack hub records."""

from __future__ import annotations

from .errors import InvalidMessageError

MAX_PREFIX_LENGTH = 5


def encode_varint(value: int) -> bytes:
    """Encode a non-negative length as 7-bit groups, low bits first."""
    if value < 0 or value >= 1 << 31:
        raise ValueError(f"Message length {value} cannot be framed (0 <= length < 2 GiB).")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buffer: bytes | bytearray, offset: int) -> tuple[int, int] | None:
    """Read a length prefix at ``offset``: ``(length, prefix_size)``, or None if incomplete."""
    value = 0
    end = len(buffer)
    for index in range(MAX_PREFIX_LENGTH):
        if offset + index >= end:
            return None
        byte = buffer[offset + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if index == MAX_PREFIX_LENGTH - 1 and byte > 0x07:
                raise InvalidMessageError("Messages bigger than 2GB are not supported.")
            return value, index + 1
    raise InvalidMessageError("Cannot read message size.")
