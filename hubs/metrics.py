"""Prometheus metrics of the hubs, defined once in one container, created on first use.

Labels are bounded: hub names and allowlisted method names only (``unknown`` for any name a
client made up), never ids.
"""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter


class HubMetrics:
    """All hub metrics; ``hub_metrics()`` returns the process's one instance."""

    def __init__(self) -> None:
        self.invocations = Counter(
            "conduit_hub_invocations_total",
            "Hub method invocations by outcome (ok, hub_error, error, rejected).",
            ["hub", "method", "outcome"],
        )
        self.errors = Counter(
            "conduit_errors_total",
            "Errors Conduit RT handled instead of crashing, by where they happened.",
            ["where"],
        )
        self.protocol_errors = Counter(
            "conduit_protocol_errors_total",
            "Connections closed because a client broke the protocol, by kind.",
            ["hub", "kind"],
        )


@lru_cache(maxsize=1)
def hub_metrics() -> HubMetrics:
    """The metrics container (registered with the default registry on first call)."""
    return HubMetrics()
