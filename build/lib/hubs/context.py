"""The connection context a hub sees: who is connected, from where, how, since when."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class ConnectionContext:
    """Facts about one hub connection, plus ``items``, a store hub code may use freely.

    ``groups`` maps each hub group the connection joined to the metadata given when it joined.
    The counters say how busy it is: hub messages received and sent (pings not counted), the
    wall-clock time of the last one either way, and the last ping latency its client reported
    (``Ping(latencyMs)``).
    """

    connection_id: str
    hub: str
    user: Any
    remote_address: str | None
    user_agent: str | None
    connected_at: datetime
    protocol: str | None = None
    items: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages_in: int = 0
    messages_out: int = 0
    last_activity: float = 0.0
    ping_latency_ms: float | None = None

    @property
    def user_id(self) -> str | None:
        """The user's primary key as a string, or None when anonymous."""
        if self.user is None or not getattr(self.user, "is_authenticated", False):
            return None
        return str(self.user.pk)
