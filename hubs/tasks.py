"""Celery tasks of the hubs app: the retry pass and retention of acknowledged delivery.

``hubs.deliver_due`` and ``hubs.apply_delivery_retention`` are meant for Celery beat
(``hubs.beat.beat_schedule()``) when ``RETRY_RUNNER`` is ``"celery"``. Both are idempotent: a
pass leases what it takes, so two running at once (a slow one and the next beat) never send the
same entry twice, and a pass killed half-way leaves its leased entries to come back.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from .conf import conduit_settings
from .loop_thread import loop_thread
from .metrics import hub_metrics

logger = logging.getLogger(__name__)


@shared_task(name="hubs.deliver_due", acks_late=True, ignore_result=True)
def deliver_due() -> dict[str, Any]:
    """One retry pass (``hubs.delivery.retry.deliver_due``); beat runs it every ``RETRY_INTERVAL``.

    Does nothing unless ``RETRY_RUNNER`` is ``"celery"``: retries run in one layer only.
    """
    from dataclasses import asdict

    from .delivery.retry import deliver_due as run_pass

    if conduit_settings.RETRY_RUNNER != "celery":
        logger.warning("hubs.deliver_due ran but RETRY_RUNNER is %r: skipped.", conduit_settings.RETRY_RUNNER)
        return {"skipped": True}
    result = loop_thread().run(run_pass(), timeout=max(60.0, float(conduit_settings.ACK_TIMEOUT)))
    _flush_counts()
    if result.published or result.resent or result.dead_lettered:
        logger.info(
            "Retry pass: %d published, %d resent, %d dead-lettered.",
            result.published,
            result.resent,
            result.dead_lettered,
        )
    return asdict(result)


def _flush_counts() -> None:
    """Let observers take the dead letters this worker counted (``process_report`` without a
    server record: a server sends it from its presence loop; a worker has none)."""
    from .signals import notify, process_report

    try:
        loop_thread().run(
            notify(process_report, server=None, ttl=float(conduit_settings.PRESENCE_TTL)), timeout=10.0
        )
    except Exception:
        logger.exception("Could not report this worker's delivery counts to observers.")
        hub_metrics().errors.labels(where="monitor_report").inc()


@shared_task(name="hubs.apply_delivery_retention", acks_late=True, ignore_result=True)
def apply_delivery_retention() -> dict[str, int]:
    """Delete dead letters past ``DEAD_LETTER_RETENTION`` and acknowledged messages past
    ``MESSAGE_RETENTION``; returns (and logs) the counts."""
    from dataclasses import asdict

    from .delivery.dead_letters import apply_retention

    done = apply_retention()
    logger.info("Retention: %d dead letter(s), %d message(s) deleted.", done.dead_letters, done.messages)
    return asdict(done)
