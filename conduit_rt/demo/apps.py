"""App config of the demo (label ``demo``)."""

from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "conduit_rt.demo"
    label = "demo"
    verbose_name = "Conduit RT demo"
    default_auto_field = "django.db.models.BigAutoField"
