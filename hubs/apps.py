"""App config of ``hubs``: connects the settings reload signal, registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig


class HubsConfig(AppConfig):
    name = "hubs"
    verbose_name = "Conduit RT hubs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.core.signals import setting_changed

        from .checks import check_rate_limit
        from .conf import reload_on_setting_changed
        from .runtime import on_setting_changed

        setting_changed.connect(reload_on_setting_changed, dispatch_uid="conduit_rt_settings")
        setting_changed.connect(on_setting_changed, dispatch_uid="conduit_rt_runtime")
        checks.register(check_rate_limit)
