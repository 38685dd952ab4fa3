"""What the connection monitor knows: one record per connection, one per serving process, and the
figures derived from them.

Times are wall-clock epoch seconds (``time.time()``), because records written by one process are
read by others, possibly on other hosts.
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
        data = asdict(self)
        del data["lease_until"]  # kept in the lease index, not in the record
        return orjson.dumps(data)

    @classmethod
    def loads(cls, raw: bytes | str, lease_until: float = 0.0) -> ConnectionRecord:
        data = orjson.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known, lease_until=lease_until)


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


@dataclass(slots=True)
class HubSummary:
    """Counts of one hub."""

    active: int = 0
    stale: int = 0
    expired: int = 0
    idle: int = 0
    groups: int = 0


@dataclass(slots=True)
class MonitorSummary:
    """Figures over every hub: ``active`` connections hold a lease; ``stale`` are those idle past
    ``STALE_THRESHOLD`` plus those whose lease expired and that the cleanup has not removed yet."""

    hubs: dict[str, HubSummary] = field(default_factory=dict)

    @property
    def active(self) -> int:
        return sum(h.active for h in self.hubs.values())

    @property
    def stale(self) -> int:
        return sum(h.stale for h in self.hubs.values())

    @property
    def groups(self) -> int:
        return sum(h.groups for h in self.hubs.values())

    @property
    def active_by_hub(self) -> dict[str, int]:
        return {name: h.active for name, h in self.hubs.items()}

    @property
    def groups_by_hub(self) -> dict[str, int]:
        return {name: h.groups for name, h in self.hubs.items()}


@dataclass(slots=True)
class MinuteCounts:
    """Messages delivered and failed in one minute (``start``: epoch seconds)."""

    start: float
    delivered: int = 0
    failed: int = 0
