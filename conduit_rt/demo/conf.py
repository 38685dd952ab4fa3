"""The demo's settings: ``settings.CONDUIT_DEMO`` over these defaults, and ``CONDUIT_DEMO_<KEY>``
environment variables (read by the project's settings module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

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


def environ_overrides(environ: Mapping[str, str]) -> dict[str, float | int]:
    """``CONDUIT_DEMO_<KEY>`` variables as typed values; an unknown name raises."""
    found: dict[str, float | int] = {}
    for env_name, raw in environ.items():
        if not env_name.startswith(ENV_PREFIX):
            continue
        key = env_name[len(ENV_PREFIX) :]
        if key not in DEFAULTS:
            raise ImproperlyConfigured(f"Unknown setting in environment: {env_name}.")
        try:
            found[key] = type(DEFAULTS[key])(raw)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{env_name}={raw!r}: {exc}") from exc
    return found
