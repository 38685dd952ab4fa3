"""Admin entries of the monitoring app: unmanaged models without tables.

Connections and group subscriptions live in the connection monitor (Redis or memory), not in the
database. These models exist so the admin can list them next to the other models, and so their
permissions exist and can be granted (``monitoring/admin.py`` reads the monitor itself):

- ``monitoring.view_connection``: the connections list; ``monitoring.disconnect_connection``:
  its "Disconnect selected connections" action;
- ``monitoring.view_groupsubscription``: the group subscriptions list;
- ``monitoring.view_dashboard``: the dashboard page and its figures endpoint.

Only ``view`` (and ``disconnect``) permissions are created: nothing here is added, changed or
deleted by hand.
"""

from __future__ import annotations

from django.db import models


class Connection(models.Model):
    """One open hub connection (a record of the connection monitor)."""

    connection_id = models.CharField("connection id", max_length=100, primary_key=True)
    hub = models.CharField(max_length=100)

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [("disconnect_connection", "Can disconnect connections")]
        verbose_name = "connection"

    def __str__(self) -> str:
        return f"{self.hub} connection {self.connection_id}"


class GroupSubscription(models.Model):
    """One hub group with at least one open connection (derived from the connection monitor)."""

    key = models.CharField(max_length=400, primary_key=True, help_text="<hub>/<group>")

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "group subscription"

    def __str__(self) -> str:
        return self.key


class Dashboard(models.Model):
    """The live dashboard page (no rows: the model carries its admin entry and permission)."""

    id = models.CharField(max_length=1, primary_key=True)

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"

    def __str__(self) -> str:
        return "dashboard"
