"""Prometheus metrics of the hubs, defined once in one container, created on first use.

Labels are bounded: hub names and allowlisted method names only (``unknown`` for any name a
client made up), never ids.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import Counter


class HubMetrics:
    """All hub metrics; ``hub_metrics()`` returns the process's one instance."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
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
        # Delivery. ``method`` is a server event name, chosen by code (bounded), never an id.
        self.acked_sent = Counter(
            "conduit_acked_messages_total",
            "Acknowledged messages accepted by the send facade (persisted), by outcome "
            "(published, spooled: held until the channel layer is back).",
            ["hub", "method", "outcome"],
        )
        self.acks = Counter(
            "conduit_acks_total",
            "Client acknowledgements, by whether they cleared a pending entry (known) or not (unknown).",
            ["hub", "result"],
        )
        self.nacks = Counter(
            "conduit_nacks_total", "Client NackMessage calls, by policy applied.", ["hub", "policy"]
        )
        self.retries = Counter(
            "conduit_retries_total",
            "Acknowledged messages sent again to one connection.",
            ["hub", "method", "kind"],
        )
        self.dead_letters = Counter(
            "conduit_dead_letters_total",
            "Messages that became dead letters, by reason.",
            ["hub", "method", "reason"],
        )
        self.unavailable = Counter(
            "conduit_delivery_unavailable_total",
            "Fire-and-forget sends refused because the channel layer was unreachable or the breaker open.",
            ["hub", "method"],
        )
        self.retry_passes = Counter(
            "conduit_retry_passes_total", "Retry passes run, by outcome (ok, skipped, error).", ["outcome"]
        )

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: for per-message paths (acks, invocations),
        where ``labels`` would validate and look the labels up every time. Labels are bounded,
        so is this cache."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found


@lru_cache(maxsize=1)
def hub_metrics() -> HubMetrics:
    """The metrics container (registered with the default registry on first call)."""
    return HubMetrics()
