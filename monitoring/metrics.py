"""The ``/metrics`` exposition: every ``conduit_...`` metric, right when several processes serve.

Two kinds of metric, each collected where it is true:

- **Counters and histograms** (deliveries, failures, acks, retries, dead letters, invocations
  and their durations, HTTP metrics of django-prometheus) are counted by the process where the
  event happens. With ``PROMETHEUS_MULTIPROC_DIR`` set (the same directory for every daphne and
  Celery process of a host, emptied before they start) prometheus_client's multiprocess mode
  sums them over all processes, dead ones included, as counters must be.
- **Gauges of shared state** (active connections and groups per hub, stale connections,
  pending acknowledgements, dead letters, breaker states, serving processes) are read at scrape
  time from the connection monitor, the pending store and the database (``StateCollector``).
  They are the same whichever process answers the scrape, and a process killed with SIGKILL
  drops out once its leases expire, which per-process gauge files cannot do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hubs.delivery.breaker import BreakerState, get_breaker
from hubs.delivery.pending import get_pending
from hubs.metrics import hub_metrics
from hubs.records import ServerRecord
from hubs.routing import routed_hub_names
from hubs.tally import process_identity

from .monitor import get_monitor
from .records import HubSummary, MonitorSummary

logger = logging.getLogger(__name__)


@dataclass
class SharedState:
    """What the gauges show, read in one go."""

    summary: MonitorSummary
    servers: list[ServerRecord]
    pending: int
    dead_letters: int
    breakers: dict[str, int] = field(default_factory=dict)


def _count_dead_letters() -> int:
    from hubs.models import DeadLetter

    return DeadLetter.objects.count()


async def read_state() -> SharedState:
    """The monitor's summary and servers, the pending count and the dead-letter count."""
    monitor = get_monitor()
    summary = await monitor.summary()
    for hub in routed_hub_names():  # served here but never connected to yet: zeros, not gaps
        summary.hubs.setdefault(hub, HubSummary())
    servers = await monitor.servers()
    pending = await get_pending().count()
    dead_letters = await database_sync_to_async(_count_dead_letters)()
    breakers = {state.value: 0 for state in BreakerState}
    me = process_identity().server_id
    for server in servers:
        if server.server_id != me:
            breakers[server.breaker_state] = breakers.get(server.breaker_state, 0) + 1
    local = get_breaker().state.value  # this process's, fresher than its own record
    breakers[local] = breakers.get(local, 0) + 1
    return SharedState(summary, servers, pending, dead_letters, breakers)


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class StateCollector(Collector):
    """Gauges of shared state, read at scrape time (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        up = _gauge("conduit_monitor_up", "1 when the shared state (Redis, database) could be read.")
        try:
            state = async_to_sync(read_state)()
        except Exception:
            logger.exception("Could not read the shared state for /metrics.")
            hub_metrics().errors.labels(where="metrics_state").inc()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        active = _gauge("conduit_active_connections", "Open hub connections (lease held).", ["hub"])
        groups = _gauge("conduit_groups", "Hub groups with at least one open connection.", ["hub"])
        stale = _gauge(
            "conduit_stale_connections",
            "Connections idle past STALE_THRESHOLD or left by a dead process, not yet cleaned.",
            ["hub"],
        )
        for hub, counts in sorted(state.summary.hubs.items()):
            active.add_metric([hub], counts.active)
            groups.add_metric([hub], counts.groups)
            stale.add_metric([hub], counts.stale)
        yield from (active, groups, stale)
        pending = _gauge("conduit_pending_acks", "Acknowledged messages waiting for a client's ack.")
        pending.add_metric([], state.pending)
        dead = _gauge("conduit_dead_letters", "Dead letters stored (not requeued or purged).")
        dead.add_metric([], state.dead_letters)
        breakers = _gauge(
            "conduit_breaker_state",
            "Serving processes whose channel-layer breaker is in each state.",
            ["state"],
        )
        for name, count in sorted(state.breakers.items()):
            breakers.add_metric([name], count)
        servers = _gauge("conduit_servers", "Serving processes reporting to the connection monitor.")
        servers.add_metric([], len(state.servers))
        yield from (pending, dead, breakers, servers)


class _Default(Collector):
    """The process's default registry, as one collector of a per-scrape registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` when multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> bytes:
    """The text exposition of every metric: counters from this process or, in multiprocess mode,
    from all of the host's processes; gauges of shared state from ``StateCollector``."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Default())
    registry.register(StateCollector())
    return generate_latest(registry)
