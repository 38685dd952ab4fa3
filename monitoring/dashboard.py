"""The admin dashboard: live figures, the connection and group lists, and disconnecting.

Everything here reads the connection monitor (``monitoring.monitor``), the pending store and the
database at request time, so every serving process shows the same picture. The admin classes
(``monitoring/admin.py``) wire these functions to staff-only URLs:

- ``dashboard_page``: the page (figures rendered by the server, then refreshed by
  ``monitoring/static/monitoring/dashboard.js``, which polls ``figures_view`` and draws the last hour);
- ``figures_view``: the same figures as JSON;
- ``select_connections`` / ``group_subscriptions``: what the two lists show;
- ``disconnect``: the list's action; it asks each connection's server, through the channel
  layer, to send the SignalR Close message and close the socket (as the stale cleanup does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from hubs.delivery.breaker import BreakerState
from hubs.delivery.pending import get_pending
from hubs.metrics import hub_metrics
from hubs.records import ConnectionRecord
from hubs.send import aclose_connection
from hubs.tally import process_identity

from .metrics import read_state
from .monitor import get_monitor

logger = logging.getLogger(__name__)

#: The error the client's Close message carries when an administrator disconnects it.
ADMIN_CLOSE_ERROR = "Connection closed by an administrator."
#: Minutes the dashboard's chart covers.
CHART_MINUTES = 60
#: Seconds between two polls of the figures by the page's script.
POLL_INTERVAL = 5.0
#: The ``user`` filter value of anonymous connections (user ids are never ``-``).
ANONYMOUS = "-"


class MonitorUnavailable(Exception):
    """The connection monitor (Redis) or the database could not be read; logged and counted."""


def _unavailable(where: str) -> MonitorUnavailable:
    logger.exception("The admin dashboard could not read the shared state (%s).", where)
    hub_metrics().errors.labels(where="admin_dashboard").inc()
    return MonitorUnavailable(f"The connection monitor could not be read ({where}); see the server log.")


# ------------------------------------------------------------------------------------ figures


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


async def read_figures() -> dict[str, Any]:
    """The dashboard's figures, JSON-ready (see ``docs/monitoring.md``, Admin dashboard)."""
    state = await read_state()
    minutes = await get_monitor().minutes(CHART_MINUTES)
    now = time.time()
    me = process_identity().server_id
    previous = minutes[-2] if len(minutes) > 1 else None
    current = minutes[-1]
    hubs = [
        {"hub": name, "connections": h.active, "groups": h.groups, "stale": h.stale}
        for name, h in sorted(state.summary.hubs.items())
    ]
    servers = [
        {
            "serverId": s.server_id,
            "host": s.host,
            "pid": s.pid,
            "connections": s.connections,
            "breakerState": s.breaker_state,
            "startedAt": _iso(s.started_at),
            "lastSeenSeconds": round(max(0.0, now - s.last_seen), 1),
            "thisProcess": s.server_id == me,
        }
        for s in state.servers
    ]
    return {
        "time": _iso(now),
        "connections": state.summary.active,
        "groups": state.summary.groups,
        "stale": state.summary.stale,
        "hubs": hubs,
        "deliveredLastMinute": previous.delivered if previous else 0,
        "failedLastMinute": previous.failed if previous else 0,
        "deliveredThisMinute": current.delivered,
        "failedThisMinute": current.failed,
        "pendingAcks": state.pending,
        "deadLetters": state.dead_letters,
        "breakers": {s.value: state.breakers.get(s.value, 0) for s in BreakerState},
        "servers": servers,
        "minutes": [{"start": _iso(m.start), "delivered": m.delivered, "failed": m.failed} for m in minutes],
    }


def load_figures() -> dict[str, Any]:
    """``read_figures`` from a sync view; ``MonitorUnavailable`` when the state cannot be read."""
    try:
        return async_to_sync(read_figures)()
    except Exception as exc:
        raise _unavailable("figures") from exc


def figures_view(request: HttpRequest) -> HttpResponse:
    """``GET``: the figures as JSON (503 with ``error`` when the monitor cannot be read)."""
    try:
        figures = load_figures()
    except MonitorUnavailable as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    response = JsonResponse(figures)
    response["Cache-Control"] = "no-store"
    return response


def dashboard_page(request: HttpRequest, context: Mapping[str, Any]) -> HttpResponse:
    """The dashboard page; ``context`` is the admin's (site header, sidebar, permissions)."""
    try:
        figures, error = load_figures(), None
    except MonitorUnavailable as exc:
        figures, error = None, str(exc)
    return TemplateResponse(
        request,
        "admin/monitoring/dashboard.html",
        {
            **context,
            "figures": figures,
            "error": error,
            "poll_interval_s": f"{POLL_INTERVAL:g}",
            "poll_interval_ms": int(POLL_INTERVAL * 1000),
        },
    )


# ------------------------------------------------------------------------- connections list


def user_key(record: ConnectionRecord) -> str:
    """The ``user`` filter value of a record: its user id, ``-`` when anonymous."""
    return record.user_id if record.user_id is not None else ANONYMOUS


def user_label(record: ConnectionRecord) -> str:
    if record.user_id is None:
        return "Anonymous"
    return record.username or f"user {record.user_id}"


def _haystack(record: ConnectionRecord) -> str:
    parts = [
        record.connection_id,
        record.user_id or "",
        record.username or "",
        record.remote_address or "",
        record.user_agent or "",
        *record.groups,
    ]
    return "\n".join(parts).casefold()


def matches(record: ConnectionRecord, query: str) -> bool:
    """Whether every word of ``query`` is in the record's id, user, address, user agent or a
    group name (case-insensitive), like the admin's search."""
    haystack = _haystack(record)
    return all(word in haystack for word in query.casefold().split())


#: ``o`` values of the connections list → sort key (ascending; ``-`` in front reverses).
CONNECTION_ORDERINGS: dict[str, Any] = {
    "connected": lambda r: r.connected_at,
    "idle": lambda r: -r.last_activity,
    "hub": lambda r: (r.hub, r.connected_at),
    "user": lambda r: (user_label(r).casefold(), r.connected_at),
    "in": lambda r: r.messages_in,
    "out": lambda r: r.messages_out,
    "latency": lambda r: (r.ping_latency_ms is None, r.ping_latency_ms or 0.0),
}
DEFAULT_CONNECTION_ORDERING = "-connected"


def ordering_of(value: str | None, known: Iterable[str], default: str) -> str:
    """``value`` if it names a known ordering (with or without ``-``), else ``default``."""
    if value and value.removeprefix("-") in set(known):
        return value
    return default


def select_connections(
    records: Iterable[ConnectionRecord],
    *,
    hub: str | None = None,
    user: str | None = None,
    group: str | None = None,
    query: str = "",
    ordering: str = DEFAULT_CONNECTION_ORDERING,
) -> list[ConnectionRecord]:
    """The records one list page shows before pagination: filtered, searched, sorted."""
    found = [
        r
        for r in records
        if (not hub or r.hub == hub)
        and (not user or user_key(r) == user)
        and (not group or group in r.groups)
        and (not query or matches(r, query))
    ]
    ordering = ordering_of(ordering, CONNECTION_ORDERINGS, DEFAULT_CONNECTION_ORDERING)
    key = CONNECTION_ORDERINGS[ordering.removeprefix("-")]
    return sorted(found, key=key, reverse=ordering.startswith("-"))


@dataclass(frozen=True)
class Choice:
    """One entry of a filter: the value, what it shows, how many records have it."""

    value: str
    label: str
    count: int


#: At most this many choices per filter (the most frequent); the search box finds the others.
MAX_CHOICES = 50


def filter_choices(records: Sequence[ConnectionRecord]) -> dict[str, list[Choice]]:
    """The choices of the hub, user and group filters, with their counts over ``records``."""
    hubs = Counter(r.hub for r in records)
    users = Counter(user_key(r) for r in records)
    labels = {user_key(r): user_label(r) for r in records}
    groups = Counter(g for r in records for g in r.groups)

    def top(counts: Counter[str], label: Mapping[str, str] | None = None) -> list[Choice]:
        chosen = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CHOICES]
        return sorted(
            (Choice(value, (label or {}).get(value, value), count) for value, count in chosen),
            key=lambda c: c.label.casefold(),
        )

    return {"hub": top(hubs), "user": top(users, labels), "group": top(groups)}


async def read_connections(hub: str | None = None) -> list[ConnectionRecord]:
    """The active connections (of one hub, or all)."""
    return await get_monitor().connections(hub)


async def pending_counts(connection_ids: Iterable[str]) -> dict[str, int]:
    """How many acknowledged messages each connection still owes an ack for."""
    ids = list(connection_ids)
    pending = get_pending()
    found = await asyncio.gather(*(pending.for_connection(c) for c in ids))
    return {c: len(entries) for c, entries in zip(ids, found, strict=True)}


def load(where: str, coroutine_function: Any, *args: Any) -> Any:
    """Run an async reader from a sync view; ``MonitorUnavailable`` when it fails."""
    try:
        return async_to_sync(coroutine_function)(*args)
    except Exception as exc:
        raise _unavailable(where) from exc


# ---------------------------------------------------------------------- group subscriptions


@dataclass
class GroupRow:
    """One hub group with at least one open connection, and each member's join metadata."""

    hub: str
    group: str
    members: list[tuple[ConnectionRecord, dict[str, Any]]] = field(default_factory=list)

    @property
    def connections(self) -> int:
        return len(self.members)

    @property
    def users(self) -> list[str]:
        return sorted({user_label(r) for r, _ in self.members}, key=str.casefold)


def group_subscriptions(
    records: Iterable[ConnectionRecord], *, hub: str | None = None, query: str = ""
) -> list[GroupRow]:
    """One row per (hub, group) of the open connections, most members first."""
    rows: dict[tuple[str, str], GroupRow] = {}
    words = query.casefold().split()
    for record in records:
        if hub and record.hub != hub:
            continue
        for name, metadata in record.groups.items():
            if words and not all(w in name.casefold() for w in words):
                continue
            row = rows.setdefault((record.hub, name), GroupRow(record.hub, name))
            row.members.append((record, dict(metadata or {})))
    return sorted(rows.values(), key=lambda r: (-r.connections, r.hub, r.group))


# ------------------------------------------------------------------------------ disconnecting


@dataclass
class DisconnectResult:
    """What ``disconnect`` did: the connections asked to close, and the ids no longer open."""

    closed: list[ConnectionRecord] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


async def disconnect(connection_ids: Iterable[str], *, error: str = ADMIN_CLOSE_ERROR) -> DisconnectResult:
    """Close each open connection: its server, wherever it runs, writes a SignalR Close message
    carrying ``error`` (``allowReconnect: false``) and closes the socket; the connection's own
    teardown then removes it from the monitor. Ids whose lease ran out (their process died) or
    that are unknown are reported as gone: there is no socket left to close."""
    monitor = get_monitor()
    result = DisconnectResult()
    for connection_id in dict.fromkeys(connection_ids):
        record = await monitor.get(connection_id)
        if record is None or not record.is_alive(time.time()):
            result.gone.append(connection_id)
            continue
        await aclose_connection(connection_id, error, layer_alias=record.layer_alias)
        result.closed.append(record)
    return result
