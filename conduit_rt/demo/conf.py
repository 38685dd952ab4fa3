"""The demo's settings: ``settings.CONDUIT_DEMO`` over these defaults, and ``CONDUIT_DEMO_<KEY>``
environment variables (read by the project's settings module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from hubs.conf import environ_overrides as hubs_environ_overrides

ENV_PREFIX = "CONDUIT_DEMO_"

DEFAULTS: dict[str, float | int] = {
    # Seconds between creating a demo task and its TaskStarted, so a client can subscribe first.
    "TASK_START_DELAY": 1.0,
    # Number of TaskProgress steps and the seconds between them.
    "TASK_STEPS": 10,
    "TASK_STEP_INTERVAL": 1.0,
    # How often the demo page's helper pings the hub to measure the connection's quality (ms).
    "PING_INTERVAL_MS": 10000,
}


def demo_setting(name: str) -> Any:
    """One demo setting, read now (``override_settings`` applies)."""
    return {**DEFAULTS, **getattr(settings, "CONDUIT_DEMO", {})}[name]


def environ_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``CONDUIT_DEMO_<KEY>`` variables as typed values; an unknown name raises."""
    return hubs_environ_overrides(environ, prefix=ENV_PREFIX, defaults=DEFAULTS)
