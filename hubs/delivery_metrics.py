"""Counting messages that reached clients and messages that did not, in one place.

Every delivery and every failure goes to Prometheus (``conduit_messages_delivered_total``,
``conduit_messages_failed_total``, the delivery-duration histogram) and to this process's tally,
which the presence loop hands to the connection monitor's per-minute figures (the dashboard).
"""

from __future__ import annotations

import time
from typing import Any

from monitoring.tally import tally

from .metrics import hub_metrics


def record_delivery(hub: str, message: dict[str, Any]) -> None:
    """A layer message (``Outbound.layer_message``) was written to one connection of ``hub``.
    Runs once per recipient connection: label children are cached, nothing does I/O."""
    metrics = hub_metrics()
    metrics.child(metrics.delivered, hub, message.get("method") or "unknown").inc()
    sent = message.get("sent")
    if sent is not None:
        metrics.child(metrics.delivery_duration, hub).observe(max(0.0, time.time() - sent))
    tally().add_delivered()


def record_failure(hub: str, method: str, reason: str, count: int = 1) -> None:
    """``count`` messages of ``hub``'s event ``method`` did not reach a recipient, for ``reason``
    (a fixed word: ``unavailable``, ``dead_letter``)."""
    hub_metrics().failed.labels(hub=hub, method=method, reason=reason).inc(count)
    tally().add_failed(count)
