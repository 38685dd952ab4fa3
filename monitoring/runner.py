"""The embedded cleanup runner: a loop in the server process that runs a stale-connection
cleanup pass every ``STALE_CLEANUP_INTERVAL`` seconds, when ``CLEANUP_RUNNER`` is ``"embedded"``.

Started by the first hub connection on a server's event loop (daphne serves no ASGI lifespan
events) and lives as long as that loop. With ``CLEANUP_RUNNER = "celery"`` the beat task
``monitoring.cleanup_stale_connections`` runs the passes instead.
"""

from __future__ import annotations

import asyncio
import logging

from hubs.conf import conduit_settings
from hubs.metrics import hub_metrics
from hubs.runtime import runtime

logger = logging.getLogger(__name__)


def ensure_cleanup_runner() -> bool:
    """Start the runner on the running loop unless it runs already (``hubs.runtime``); True if
    it runs."""
    if conduit_settings.CLEANUP_RUNNER != "embedded":
        return False
    return runtime().loop().ensure_runner("cleanup-runner", _run)


async def _run() -> None:
    from .cleanup import cleanup_stale

    while True:
        await asyncio.sleep(float(conduit_settings.STALE_CLEANUP_INTERVAL))
        try:
            await cleanup_stale()
        except Exception:
            logger.exception("Stale-connection cleanup failed; the next pass retries.")
            hub_metrics().errors.labels(where="cleanup_pass").inc()
