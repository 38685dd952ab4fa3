"""App config of ``monitoring``."""

from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Conduit RT monitoring"
    default_auto_field = "django.db.models.BigAutoField"
