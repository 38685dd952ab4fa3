"""The Celery beat entries Conduit RT needs in production (``RETRY_RUNNER = "celery"``).

    # settings.py
    from hubs.beat import beat_schedule
    CELERY_BEAT_SCHEDULE = {**beat_schedule(), ...your entries...}

Run beat once per deployment (``celery -A proj beat``), workers as many as you like.
"""

from __future__ import annotations

from typing import Any


def beat_schedule(
    retry_interval: float = 1.0, retention_interval: float = 3600.0, cleanup_interval: float = 60.0
) -> dict[str, Any]:
    """Beat entries: the retry pass every ``retry_interval`` seconds (pass the same value as
    ``CONDUIT_RT['RETRY_INTERVAL']``), the retention task every ``retention_interval``, and the
    stale-connection cleanup every ``cleanup_interval`` (``STALE_CLEANUP_INTERVAL``).

    Each retry pass expires if no worker starts it within a few intervals, so a backlog of passes
    never piles up while workers are down (the next one does all the work anyway).
    """
    return {
        "conduit-deliver-due": {
            "task": "hubs.deliver_due",
            "schedule": float(retry_interval),
            "options": {"expires": max(5.0, 5 * float(retry_interval))},
        },
        "conduit-stale-cleanup": {
            "task": "monitoring.cleanup_stale_connections",
            "schedule": float(cleanup_interval),
            "options": {"expires": max(5.0, float(cleanup_interval))},
        },
        "conduit-delivery-retention": {
            "task": "hubs.apply_delivery_retention",
            "schedule": float(retention_interval),
            "options": {"expires": float(retention_interval)},
        },
    }
