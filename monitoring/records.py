"""The figures the connection monitor derives from the records the core reports
(``hubs.records``): counts per hub, per minute.

Times are wall-clock epoch seconds (``time.time()``), because records written by one process are
read by others, possibly on other hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
