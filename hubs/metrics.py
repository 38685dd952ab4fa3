"""Prometheus metrics of the hubs, defined once in one container, created on first use.

Labels are bounded: hub names and allowlisted method names only (``unknown`` for any name a
client made up), never ids.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Histogram


class HubMetrics:
    """All hub metrics; ``hub_metrics()`` returns the process's one instance."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.invocations = Counter(
            "conduit_hub_invocations_total",
            "Hub method invocations by outcome (ok, hub_error, error, rejected).",
            ["hub", "method", "outcome"],
        )
        self.invocation_duration = Histogram(
            "conduit_hub_invocation_duration_seconds",
            "Seconds a hub method invocation took, filters included (streams: until the stream "
            "ended), by outcome (ok, hub_error, error). Rejected invocations never run: not here.",
            ["hub", "method", "outcome"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
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
        self.rate_limited = Counter(
            "conduit_rate_limited_total",
            "Invocations held back by RATE_LIMIT or the per-connection queue, by outcome (delayed: "
            "waited for the window; refused: the queue was full; stream_refused: a stream over "
            "the limit).",
            ["hub", "outcome"],
        )
        self.admission_refused = Counter(
            "conduit_admission_refused_total",
            "Connection attempts refused by admission control, by reason (rate: CONNECT_RATE; "
            "connections: MAX_CONNECTIONS; user: MAX_CONNECTIONS_PER_USER) and door (negotiate: "
            "503 with Retry-After; websocket: a Close that allows reconnecting).",
            ["hub", "reason", "door"],
        )
        self.slow_consumers = Counter(
            "conduit_slow_consumers_total",
            "Connections closed because the client did not read what was sent to it "
            "(OUTBOUND_QUEUE_BYTES not read).",
            ["hub"],
        )
        self.retry_passes = Counter(
            "conduit_retry_passes_total", "Retry passes run, by outcome (ok, skipped, error).", ["outcome"]
        )
        # Messages reaching clients, and messages that did not. ``method`` is a server event name.
        self.delivered = Counter(
            "conduit_messages_delivered_total",
            "Server messages written to a client connection.",
            ["hub", "method"],
        )
        self.failed = Counter(
            "conduit_messages_failed_total",
            "Server messages that did not reach their recipients, by reason (unavailable: the "
            "channel layer refused a fire-and-forget send; dead_letter: an acknowledged message "
            "gave up on a recipient).",
            ["hub", "method", "reason"],
        )
        self.stale_cleaned = Counter(
            "conduit_stale_connections_cleaned_total",
            "Connections the stale cleanup handled, by reason (expired: its process stopped "
            "renewing its lease, state removed; idle: no hub message for STALE_THRESHOLD, closed).",
            ["hub", "reason"],
        )
        self.delivery_duration = Histogram(
            "conduit_message_delivery_duration_seconds",
            "Seconds from a message's publish to its first write to a client connection, "
            "once per message and serving process.",
            ["hub"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
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
