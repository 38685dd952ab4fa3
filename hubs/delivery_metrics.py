"""Counting messages that reached clients and messages that did not, in one place.

Every delivery and every failure goes to Prometheus (``conduit_messages_delivered_total``,
``conduit_messages_failed_total``, the delivery-duration histogram) and to this process's tally,
which observers take on ``hubs.signals.process_report`` (the monitoring app's per-minute figures).
"""

from __future__ import annotations

import time
from typing import Any

from .metrics import hub_metrics
from .tally import tally

_delivered: dict[tuple[str, str], Any] = {}
_duration: dict[str, Any] = {}
_last_observed: list[tuple[Any, Any]] = [(None, None)]


def record_delivery(hub: str, message: dict[str, Any]) -> None:
    """A layer message (``Outbound.layer_message``) was written to one connection of ``hub``.

    Runs once per recipient connection, so it does no I/O and as little as it can: the delivered
    counter and the tally count every write; the duration histogram observes each message once
    per serving process, at its first local write (a process's router hands one message to all
    its local recipients in one go, so the later writes would only repeat that figure)."""
    key = (hub, message.get("method") or "unknown")
    counter = _delivered.get(key)
    if counter is None:
        counter = _delivered[key] = hub_metrics().delivered.labels(*key)
    counter.inc()
    tally().add_delivered()
    sent = message.get("sent")
    if sent is not None and _last_observed[0] != (message.get("id"), sent):
        _last_observed[0] = (message.get("id"), sent)
        histogram = _duration.get(hub)
        if histogram is None:
            histogram = _duration[hub] = hub_metrics().delivery_duration.labels(hub)
        histogram.observe(max(0.0, time.time() - sent))


def record_failure(hub: str, method: str, reason: str, count: int = 1) -> None:
    """``count`` messages of ``hub``'s event ``method`` did not reach a recipient, for ``reason``
    (a fixed word: ``unavailable``, ``dead_letter``)."""
    hub_metrics().failed.labels(hub=hub, method=method, reason=reason).inc(count)
    tally().add_failed(count)
