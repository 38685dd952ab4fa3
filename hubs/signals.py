"""The signals the core sends about its connections and its process, for observers such as the
``monitoring`` app (which connects to them in its ``AppConfig.ready()``; the core never imports it).

Every signal is sent with ``Signal.asend_robust`` from the event loop that serves the
connections, so receivers should be coroutine functions (a plain function is run in a thread by
Django, once per send). A receiver that raises never stops the core: the error is logged with
its traceback and counted (``conduit_errors_total{where="observer"}``), and the next receiver
still runs. Receivers must not block: they run on the delivery loop.

=========================  ==========================================================================
signal                     sent, with its keyword arguments
=========================  ==========================================================================
``connection_opened``      a connection's handshake succeeded and it joined its system groups, before
                           ``on_connection_established``: ``record`` (``hubs.records.ConnectionRecord``),
                           ``ttl`` (seconds its lease holds)
``connection_changed``     it joined or left a hub group: ``record``, ``ttl``
``connections_renewed``    every ``PRESENCE_TTL / 3`` seconds, for all of the process's connections at
                           once: ``connections`` (a dict of connection id to hub, all of them:
                           their leases hold ``ttl`` seconds more), ``records`` (a list: those that
                           changed since their last record, or were last sent 5 minutes ago)
``connections_closed``     connections closed and left their groups; those of one moment together (a
                           disconnect storm is written in batches): ``connections`` (a list of
                           ``(connection_id, hub)``)
``process_report``         every presence round of a serving process, and after every retry pass of a
                           Celery worker: ``server`` (``hubs.records.ServerRecord``, None on a worker),
                           ``ttl``; take the delivery counts then (``hubs.tally.tally().take()``)
=========================  ==========================================================================

``sender`` is the hub class for the signals of one connection, None for the others. Per-message
events are not signals (a signal per delivery would cost more than the delivery): the core
counts deliveries and failures in Prometheus and in ``hubs.tally``, and observers read the tally
on ``process_report``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from .metrics import hub_metrics

logger = logging.getLogger(__name__)

connection_opened = Signal()
connection_changed = Signal()
connections_renewed = Signal()
connections_closed = Signal()
process_report = Signal()

_NAMES = {
    id(connection_opened): "connection_opened",
    id(connection_changed): "connection_changed",
    id(connections_renewed): "connections_renewed",
    id(connections_closed): "connections_closed",
    id(process_report): "process_report",
}


async def notify(signal: Signal, sender: Any = None, **kwargs: Any) -> None:
    """Send ``signal`` to its receivers; each receiver's error is logged and counted."""
    if not signal.receivers:
        return
    for receiver, result in await signal.asend_robust(sender, **kwargs):
        if isinstance(result, BaseException):
            name = _NAMES.get(id(signal), "signal")
            logger.error("A receiver of %s (%r) failed.", name, receiver, exc_info=result)
            hub_metrics().errors.labels(where="observer").inc()
