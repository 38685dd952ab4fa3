"""Celery tasks of the monitoring app.

``monitoring.cleanup_stale_connections`` is meant for Celery beat (``hubs.beat.beat_schedule()``)
when ``CLEANUP_RUNNER`` is ``"celery"``; a pass is idempotent, so overlapping runs are harmless.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from celery import shared_task

from hubs.conf import conduit_settings
from hubs.loop_thread import loop_thread

logger = logging.getLogger(__name__)


@shared_task(name="monitoring.cleanup_stale_connections", acks_late=True, ignore_result=True)
def cleanup_stale_connections() -> dict[str, object]:
    """One cleanup pass (``monitoring.cleanup.cleanup_stale``) on the worker's loop thread.

    Does nothing unless ``CLEANUP_RUNNER`` is ``"celery"``: the cleanup runs in one layer only.
    """
    from .cleanup import cleanup_stale

    if conduit_settings.CLEANUP_RUNNER != "celery":
        logger.warning(
            "monitoring.cleanup_stale_connections ran but CLEANUP_RUNNER is %r: skipped.",
            conduit_settings.CLEANUP_RUNNER,
        )
        return {"skipped": True}
    result = loop_thread().run(cleanup_stale(), timeout=60.0)
    if result.expired or result.idle:
        logger.info("Cleanup: %d expired connection(s) removed, %d idle closed.", result.expired, result.idle)
    return asdict(result)
