"""Conversion of common Python values that JSON and MessagePack cannot encode natively."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

import msgpack

from .errors import UnsupportedTypeError


def as_utc_aware(value: datetime) -> datetime:
    """A naive datetime is taken to be UTC; an aware one is returned unchanged."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value


def iso_datetime(value: datetime) -> str:
    """ISO-8601 text with an offset; UTC is written with a ``Z`` suffix."""
    text = as_utc_aware(value).isoformat()
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return text


def json_default(value: object) -> object:
    """``default`` hook for ``json.dumps``."""
    if isinstance(value, datetime):
        return iso_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    raise UnsupportedTypeError(value)


def msgpack_default(value: object) -> object:
    """``default`` hook for ``msgpack.packb``: datetimes become timestamp ext -1."""
    if isinstance(value, datetime):
        return msgpack.Timestamp.from_datetime(as_utc_aware(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    raise UnsupportedTypeError(value)
