"""The embedded retry runner: a loop in the server process that runs a retry pass every
``RETRY_INTERVAL`` seconds, when ``RETRY_RUNNER`` is ``"embedded"``.

Started by the first hub connection on a server's event loop (daphne serves no ASGI lifespan
events, so there is no earlier hook) and lives as long as that loop. In production
(``RETRY_RUNNER = "celery"``) the beat task ``hubs.deliver_due`` runs the passes instead.
"""

from __future__ import annotations

import asyncio
import logging

from ..conf import conduit_settings
from ..metrics import hub_metrics

logger = logging.getLogger(__name__)


def ensure_embedded_runner() -> bool:
    """Start the runner on the running loop unless it runs already (``hubs.runtime``); True if
    it runs."""
    from ..runtime import runtime

    if conduit_settings.RETRY_RUNNER != "embedded":
        return False
    return runtime().loop().ensure_runner("retry-runner", _run)


async def _run() -> None:
    from .retry import deliver_due

    while True:
        try:
            result = await deliver_due()
            if result.resent or result.dead_lettered or result.published:
                logger.info(
                    "Retry pass: %d published, %d resent, %d dead-lettered.",
                    result.published,
                    result.resent,
                    result.dead_lettered,
                )
        except Exception:
            logger.exception("Retry pass failed; the next one retries.")
            hub_metrics().errors.labels(where="retry_pass").inc()
        await asyncio.sleep(float(conduit_settings.RETRY_INTERVAL))
