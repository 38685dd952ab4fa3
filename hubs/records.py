"""What the core reports of its connections and serving processes to observers (``hubs.signals``).

One record per connection and one per serving process. Times are wall-clock epoch seconds
(``time.time()``), because records written by one process are read by others, possibly on
other hosts. The ``monitoring`` app stores them (``monitoring.monitor``); the core only makes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class ConnectionRecord:
    """One live hub connection, as its serving process last reported it.

    ``channels`` are the channel-layer groups the connection belongs to (its own, its user's, the
    hub's, and one per hub group): the stale cleanup uses them to remove the memberships of a
    connection whose process died. ``lease_until`` is filled in when the record is read.
    """

    connection_id: str
    hub: str
    server_id: str
    user_id: str | None = None
    username: str | None = None
    remote_address: str | None = None
    protocol: str | None = None
    user_agent: str | None = None
    connected_at: float = 0.0
    last_activity: float = 0.0
    messages_in: int = 0
    messages_out: int = 0
    ping_latency_ms: float | None = None
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)
    layer_alias: str = "default"
    lease_until: float = 0.0

    def idle_for(self, now: float) -> float:
        """Seconds since the last hub message in either direction (pings do not count)."""
        return max(0.0, now - self.last_activity)

    def is_alive(self, now: float) -> bool:
        """Whether its process renewed its lease recently enough."""
        return self.lease_until > now

    def dumps(self) -> bytes:
        # A shallow dict (``asdict`` deep-copies the groups: the presence round dumps every
        # record of the process); the lease is kept in the lease index, not in the record.
        return orjson.dumps({name: getattr(self, name) for name in _RECORD_FIELDS})

    @classmethod
    def loads(cls, raw: bytes | str, lease_until: float = 0.0) -> ConnectionRecord:
        data = orjson.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known, lease_until=lease_until)


_RECORD_FIELDS = tuple(name for name in ConnectionRecord.__dataclass_fields__ if name != "lease_until")


@dataclass(slots=True)
class ServerRecord:
    """One serving process (a daphne worker): identity, connection count, breaker state."""

    server_id: str
    host: str
    pid: int
    started_at: float
    last_seen: float
    connections: int = 0
    breaker_state: str = "closed"

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | str) -> ServerRecord:
        data = orjson.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
