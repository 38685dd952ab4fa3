"""Admin of the monitoring app: live connections, group subscriptions and the dashboard.

The three models are unmanaged and have no table (``monitoring/models.py``): each admin class
serves its own list from the connection monitor instead of a queryset, at the admin's usual
URLs (``/admin/monitoring/connection/``, ``.../groupsubscription/``, ``.../dashboard/``), behind
the admin's login (active staff users only) and the model's view permission. Nothing can be
added, changed or deleted here. Disconnecting needs ``monitoring.disconnect_connection``; each
disconnect is logged (``monitoring.admin`` logger, with the staff user) and written to the admin's history
(``LogEntry``, shown under "Recent actions").
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from . import dashboard
from .models import Connection, Dashboard, GroupSubscription

logger = logging.getLogger(__name__)

#: Rows per page of the two lists.
PER_PAGE = 100


def query_string(params: QueryDict, **changes: str | None) -> str:
    """``params`` with ``changes`` applied (None removes a key) as ``?...``; the page resets."""
    merged = {k: v for k, v in params.items() if k != "p"}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return "?" + urlencode(merged) if merged else "?"


def list_filter(
    params: QueryDict, key: str, current: str | None, choices: list[tuple[str, str]]
) -> dict[str, Any]:
    """One filter of the sidebar: "All", then each (value, label), with its link and state."""
    return {
        "title": key,
        "choices": [{"label": "All", "selected": current is None, "url": query_string(params, **{key: None})}]
        + [
            {"label": label, "selected": current == value, "url": query_string(params, **{key: value})}
            for value, label in choices
        ],
    }


class MonitorListAdmin(admin.ModelAdmin):
    """An unmanaged model's admin: a view-only list read from the monitor, at the usual URLs."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def extra_urls(self) -> list[URLPattern]:
        return []

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        changelist = self.admin_site.admin_view(self.changelist_view)
        return [*self.extra_urls(), path("", changelist, name="{}_{}_changelist".format(*info))]

    def wrap(self, view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        """``view`` behind the admin's login and this model's view permission."""

        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not self.has_view_permission(request):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return self.admin_site.admin_view(checked)

    def base_context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "subtitle": None,
            "has_view_permission": True,
        }

    def read(self, request: HttpRequest, where: str, reader: Any, *args: Any) -> Any:
        """A monitor read for a list; None (and an error message) when it fails."""
        try:
            return dashboard.load(where, reader, *args)
        except dashboard.MonitorUnavailable as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None

    def paginate(self, request: HttpRequest, rows: list[Any]) -> Any:
        return Paginator(rows, PER_PAGE).get_page(request.GET.get("p"))


@admin.register(Connection)
class ConnectionAdmin(MonitorListAdmin):
    """Open hub connections: filters by hub, user and group, search, and the disconnect action."""

    def extra_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        # The admin's history links a connection to its change page: show it in the list instead.
        return [
            path("<path:object_id>/change/", self.wrap(self.find_view), name="{}_{}_change".format(*info))
        ]

    def has_disconnect_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.disconnect_connection")

    def changelist_url(self) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_changelist")

    def find_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return HttpResponseRedirect(self.changelist_url() + query_string(QueryDict(), q=unquote(object_id)))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self.action_view(request)
        params = request.GET
        hub, user, group = params.get("hub") or None, params.get("user") or None, params.get("group") or None
        search = params.get("q", "").strip()
        ordering = dashboard.ordering_of(
            params.get("o"), dashboard.CONNECTION_ORDERINGS, dashboard.DEFAULT_CONNECTION_ORDERING
        )
        records = self.read(request, "connections", dashboard.read_connections) or []
        rows = dashboard.select_connections(
            records, hub=hub, user=user, group=group, query=search, ordering=ordering
        )
        page = self.paginate(request, rows)
        pending = (
            self.read(request, "pending", dashboard.pending_counts, [r.connection_id for r in page]) or {}
        )
        choices = dashboard.filter_choices(records)
        selected = {"hub": hub, "user": user, "group": group}
        filters = [
            list_filter(
                params, key, selected[key], [(c.value, f"{c.label} ({c.count})") for c in choices[key]]
            )
            for key in ("hub", "user", "group")
        ]
        headers = [
            self.header(params, ordering, *column)
            for column in (
                ("Connection id", None, "The SignalR connection id, and the process serving it."),
                ("Hub", "hub", None),
                ("User", "user", None),
                ("Client", None, "Remote address, protocol, and user agent."),
                ("Connected at", "connected", "UTC."),
                ("Idle", "idle", "Since the last hub message either way (pings do not count)."),
                ("In", "in", "Hub messages received."),
                ("Out", "out", "Hub messages sent."),
                ("Pending", None, "Acknowledged messages this connection has not acknowledged yet."),
                ("Groups", None, "Hub groups joined, with the metadata given when joining."),
                ("Ping", "latency", "The last round trip the client reported."),
            )
        ]
        now = time.time()
        context = {
            **self.base_context(request, "Connections"),
            "rows": [
                {
                    "record": r,
                    "user": dashboard.user_label(r),
                    "connected_at": _datetime(r.connected_at),
                    "idle": _duration(r.idle_for(now)),
                    "pending": pending.get(r.connection_id),
                    "groups": [
                        {"name": name, "metadata": _compact(meta), "url": query_string(params, group=name)}
                        for name, meta in sorted(r.groups.items())
                    ],
                }
                for r in page
            ],
            "page": page,
            "total": len(records),
            "found": len(rows),
            "filters": filters,
            "has_active_filters": any(selected.values()),
            "clear_filters_url": query_string(params, hub=None, user=None, group=None),
            "search": search,
            "hidden_params": [(k, v) for k, v in params.items() if k not in ("q", "p")],
            "headers": headers,
            "page_urls": _page_urls(params, page),
            "can_disconnect": self.has_disconnect_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/monitoring/connections.html", context)

    @staticmethod
    def header(
        params: QueryDict, ordering: str, text: str, key: str | None, hint: str | None
    ) -> dict[str, Any]:
        if key is None:
            return {"text": text, "help": hint}
        current = ordering.removeprefix("-") == key
        descending = ordering.startswith("-")
        toggled = key if current and descending else f"-{key}" if current else key
        return {
            "text": text,
            "help": hint,
            "url": query_string(params, o=toggled),
            "sorted": current,
            "ascending": current and not descending,
        }

    def action_view(self, request: HttpRequest) -> HttpResponse:
        """The POST of the list's action form; redirects back to the list (same filters)."""
        back = HttpResponseRedirect(request.get_full_path())
        if request.POST.get("action") != "disconnect_connections":
            self.message_user(request, "No action selected.", messages.WARNING)
            return back
        if not self.has_disconnect_permission(request):
            raise PermissionDenied
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if not selected:
            self.message_user(
                request,
                "Items must be selected in order to perform actions on them. No items have been changed.",
                messages.WARNING,
            )
            return back
        try:
            result = dashboard.load("disconnect", dashboard.disconnect, selected)
        except dashboard.MonitorUnavailable as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return back
        self.record_disconnects(request, result)
        text = f"Disconnected {len(result.closed)} connection(s)."
        if result.gone:
            text += f" {len(result.gone)} were no longer open."
        self.message_user(request, text, messages.SUCCESS if result.closed else messages.WARNING)
        return back

    def record_disconnects(self, request: HttpRequest, result: dashboard.DisconnectResult) -> None:
        """Log each disconnect, and write it to the admin's history."""
        for record in result.closed:
            logger.info(
                "%s disconnected connection %s of %s (user %s, server %s).",
                request.user.get_username(),
                record.connection_id,
                record.hub,
                dashboard.user_label(record),
                record.server_id,
            )
        if result.closed:
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=[Connection(connection_id=r.connection_id, hub=r.hub) for r in result.closed],
                action_flag=CHANGE,
                change_message=f"Disconnected: {dashboard.ADMIN_CLOSE_ERROR}",
            )


@admin.register(GroupSubscription)
class GroupSubscriptionAdmin(MonitorListAdmin):
    """Hub groups of the open connections: members, users and each member's join metadata."""

    #: Members listed with their metadata per row; the link to the connections list shows all.
    MEMBERS_SHOWN = 10

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        params = request.GET
        hub = params.get("hub") or None
        search = params.get("q", "").strip()
        records = self.read(request, "connections", dashboard.read_connections) or []
        rows = dashboard.group_subscriptions(records, hub=hub, query=search)
        page = self.paginate(request, rows)
        connections = reverse(f"{self.admin_site.name}:monitoring_connection_changelist")
        hubs = sorted({r.hub for r in records})
        context = {
            **self.base_context(request, "Group subscriptions"),
            "rows": [
                {
                    "row": row,
                    "connections_url": connections + query_string(QueryDict(), hub=row.hub, group=row.group),
                    "members": [
                        {"record": r, "user": dashboard.user_label(r), "metadata": _compact(meta)}
                        for r, meta in row.members[: self.MEMBERS_SHOWN]
                    ],
                    "more": max(0, row.connections - self.MEMBERS_SHOWN),
                }
                for row in page
            ],
            "page": page,
            "found": len(rows),
            "filters": [list_filter(params, "hub", hub, [(name, name) for name in hubs])],
            "has_active_filters": hub is not None,
            "clear_filters_url": query_string(params, hub=None),
            "search": search,
            "hidden_params": [(k, v) for k, v in params.items() if k not in ("q", "p")],
            "page_urls": _page_urls(params, page),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/monitoring/group_subscriptions.html", context)


@admin.register(Dashboard)
class DashboardAdmin(MonitorListAdmin):
    """The live dashboard page and its JSON figures (``figures/``)."""

    def extra_urls(self) -> list[URLPattern]:
        return [path("figures/", self.wrap(dashboard.figures_view), name="monitoring_dashboard_figures")]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        site = self.admin_site.name
        context = {
            **self.base_context(request, "Dashboard"),
            "figures_url": reverse(f"{site}:monitoring_dashboard_figures"),
            "links": {
                "connections": _reverse_if(
                    request, site, "monitoring.view_connection", "monitoring_connection_changelist"
                ),
                "groups": _reverse_if(
                    request,
                    site,
                    "monitoring.view_groupsubscription",
                    "monitoring_groupsubscription_changelist",
                ),
                "messages": _reverse_if(
                    request, site, "hubs.view_ackedmessage", "hubs_ackedmessage_changelist"
                ),
                "dead_letters": _reverse_if(
                    request, site, "hubs.view_deadletter", "hubs_deadletter_changelist"
                ),
            },
            **(extra_context or {}),
        }
        return dashboard.dashboard_page(request, context)


def _reverse_if(request: HttpRequest, site: str, permission: str, name: str) -> str | None:
    """The URL of an admin page the user may see, else None (the figure shows without a link)."""
    if not request.user.has_perm(permission):
        return None
    return reverse(f"{site}:{name}")


def _datetime(epoch: float) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=UTC) if epoch else None


def _duration(seconds: float) -> str:
    """``seconds`` as the admin shows an idle time: ``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _compact(metadata: Mapping[str, Any]) -> str:
    return json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False, default=str) if metadata else ""


def _page_urls(params: QueryDict, page: Any) -> dict[str, str | None]:
    base = query_string(params)
    joiner = "&" if len(base) > 1 else ""
    return {
        "previous": f"{base}{joiner}p={page.previous_page_number()}" if page.has_previous() else None,
        "next": f"{base}{joiner}p={page.next_page_number()}" if page.has_next() else None,
    }
