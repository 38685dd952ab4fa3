"""An outgoing server event, encoded once per protocol at the sender.

Every recipient connection gets the same record, so the sender encodes it once for JSON and once
for MessagePack and the layer carries both; a consumer writes the bytes of its protocol without
encoding anything (fan-out costs no per-connection serialisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conf import conduit_settings
from .payloads import build_body
from .protocol import InvocationMessage, get_protocol

PROTOCOLS = ("json", "messagepack")
DELIVER = "conduit.deliver"


@dataclass(frozen=True, slots=True)
class Outbound:
    """A server → client invocation with its envelope, ready for the wire."""

    message_id: str
    method: str
    body: dict[str, Any]
    records: dict[str, str | bytes]

    def layer_message(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """The channel-layer message that carries this event to consumers."""
        message: dict[str, Any] = {"type": DELIVER, "id": self.message_id, "records": self.records}
        if exclude:
            message["exclude"] = list(exclude)
        return message


def encode_records(method: str, body: dict[str, Any]) -> dict[str, str | bytes]:
    """The complete wire record of ``method(body)`` for each protocol (JSON as text)."""
    invocation = InvocationMessage(target=method, arguments=[body])
    records: dict[str, str | bytes] = {}
    for name in PROTOCOLS:
        data = get_protocol(name).encode(invocation)
        records[name] = data.decode("utf-8") if name == "json" else data
    return records


def build_outbound(
    method: str,
    payload: Any = None,
    *,
    correlation_id: str | None = None,
    message_id: str | None = None,
    retry_count: int = 0,
) -> Outbound:
    """Validate and encode one event; raises ``TypeError``/``ValueError`` for a bad payload."""
    if not isinstance(method, str) or not method:
        raise ValueError("A server event needs a non-empty method name.")
    body = build_body(
        payload,
        message_id=message_id,
        correlation_id=correlation_id,
        retry_count=retry_count,
        omit_nulls=conduit_settings.OMIT_NULLS,
    )
    return Outbound(
        message_id=body["messageId"], method=method, body=body, records=encode_records(method, body)
    )
