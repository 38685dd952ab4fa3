"""An outgoing server event, encoded once per protocol at the sender.

Every recipient connection gets the same record, so the sender encodes it once for JSON and once
for MessagePack and the layer carries both; a consumer writes the bytes of its protocol without
encoding anything (fan-out costs no per-connection serialisation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

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

    def layer_message(self, exclude: tuple[str, ...] = (), *, redeliver: bool = False) -> dict[str, Any]:
        """The channel-layer message that carries this event to consumers.

        ``redeliver`` marks a retry of an unacknowledged message: the consumer sends it even
        though it already sent that message id (its duplicate filter is for fan-out overlaps).
        """
        message: dict[str, Any] = {
            "type": DELIVER,
            "id": self.message_id,
            "method": self.method,
            "sent": time.time(),  # the delivery-duration histogram starts here
            "records": self.records,
        }
        if exclude:
            message["exclude"] = list(exclude)
        if redeliver:
            message["redeliver"] = True
        return message


def encode_outbound(method: str, body: dict[str, Any]) -> Outbound:
    """Encode ``method(body)`` for every protocol; raises ``EncodeError`` (a ``ValueError``) for
    values JSON cannot carry, such as NaN."""
    invocation = InvocationMessage(target=method, arguments=[body])
    records: dict[str, str | bytes] = {}
    for name in PROTOCOLS:
        data = get_protocol(name).encode(invocation)
        records[name] = data.decode("utf-8") if name == "json" else data
    return Outbound(message_id=body["messageId"], method=method, body=body, records=records)
