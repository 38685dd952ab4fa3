"""Server message payloads: one camelCase object per message, with the envelope merged in.

The envelope (``messageId``, ``timestamp``, ``correlationId``, ``retryCount``) is what lets a
client dedupe and a server retry; see ``docs/delivery.md``.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_SNAKE = re.compile(r"_([a-z0-9])")


def camelize(key: str) -> str:
    """``progress_percentage`` → ``progressPercentage``; camelCase keys stay as they are."""
    if "_" not in key.strip("_"):
        return key
    head = key[: len(key) - len(key.lstrip("_"))]
    return head + _SNAKE.sub(lambda m: m.group(1).upper(), key.lstrip("_"))


def to_wire(value: Any, *, omit_nulls: bool = True) -> Any:
    """Convert a payload to plain data: camelCase keys, dataclasses as dicts, Nones left out."""
    if hasattr(value, "to_wire") and callable(value.to_wire):
        value = value.to_wire()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {
            camelize(str(k)): to_wire(v, omit_nulls=omit_nulls)
            for k, v in value.items()
            if not (omit_nulls and v is None)
        }
    if isinstance(value, (list, tuple)):
        return [to_wire(v, omit_nulls=omit_nulls) for v in value]
    return value


def new_message_id() -> str:
    """A fresh, unique message id."""
    return uuid.uuid4().hex


def utc_timestamp(now: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as JavaScript's ``Date.toISOString`` writes."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: Keys the envelope owns; a payload that uses one is refused rather than silently overwritten.
ENVELOPE_KEYS = frozenset(
    {"messageId", "timestamp", "correlationId", "retryCount", "seq", "epoch", "requiresAck"}
)


def build_body(
    payload: Any,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    retry_count: int = 0,
    requires_ack: bool = False,
    omit_nulls: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The single object a server event carries: the payload's fields plus the envelope.

    ``requiresAck`` is present (true) only on acknowledged messages: the client answers those
    with ``AcknowledgeMessage(messageId)``.
    """
    body = to_wire(payload if payload is not None else {}, omit_nulls=omit_nulls)
    if not isinstance(body, dict):
        raise TypeError(
            f"A server message payload must be a single object (dict or dataclass), "
            f"got {type(payload).__name__}."
        )
    reserved = sorted(ENVELOPE_KEYS.intersection(body))
    if reserved:
        raise ValueError(f"Payload key(s) {', '.join(reserved)} belong to the message envelope; rename them.")
    envelope = {
        "messageId": message_id or new_message_id(),
        "timestamp": utc_timestamp(now),
        "correlationId": correlation_id,
        "retryCount": retry_count,
    }
    if requires_ack:
        envelope["requiresAck"] = True
    if omit_nulls:
        envelope = {k: v for k, v in envelope.items() if v is not None}
    return {**body, **envelope}
