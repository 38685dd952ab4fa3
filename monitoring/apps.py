"""App config of ``monitoring``: connects its receivers of the core's signals (``hubs.signals``)."""

from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Conduit RT monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from hubs.runtime import runtime

        from .monitor import get_monitor
        from .observer import connect

        connect()
        runtime().register_store("monitor", get_monitor)
