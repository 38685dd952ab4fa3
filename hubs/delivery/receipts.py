"""A client's receipts for acknowledged messages: ``AcknowledgeMessage(s)``, batched with the
process's other acks (``ack_batch``), and ``NackMessage``, which ``NACK_POLICY`` turns into a
retry or a dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from ..conf import conduit_settings
from ..metrics import hub_metrics
from ..runtime import ack_batcher
from .dead_letters import dead_letter_now
from .pending import get_pending

logger = logging.getLogger(__name__)


async def acknowledge(hub: str, connection_id: str, message_id: str) -> bool:
    """``AcknowledgeMessage``: clear the connection's pending entry; True if there was one.
    Batched with the process's other acks (``ack_batch``)."""
    cleared = await ack_batcher().ack(connection_id, message_id)
    metrics = hub_metrics()
    metrics.child(metrics.acks, hub, "known" if cleared else "unknown").inc()
    return cleared


async def acknowledge_many(hub: str, connection_id: str, message_ids: Sequence[str]) -> list[bool]:
    """``AcknowledgeMessages``: clear several of the connection's entries; for each id, whether it
    was pending. They join the process's ack batch, with every other connection's acks."""
    cleared = await ack_batcher().ack_many(connection_id, list(message_ids))
    metrics = hub_metrics()
    known = sum(cleared)
    if known:
        metrics.child(metrics.acks, hub, "known").inc(known)
    if len(cleared) - known:
        metrics.child(metrics.acks, hub, "unknown").inc(len(cleared) - known)
    return cleared


async def nack(
    hub: str, connection_id: str, message_id: str, reason: str, *, now: float | None = None
) -> str:
    """``NackMessage``: apply ``NACK_POLICY``; returns what was done (retry, dead_letter, unknown).

    ``retry`` makes the entry due now (the retry pass counts it as a failed attempt and sends it
    again, or dead-letters it after the last one); ``dead_letter`` makes it a dead letter at once.
    """
    now = time.time() if now is None else now
    policy = str(conduit_settings.NACK_POLICY)
    pending = get_pending()
    if policy == "dead_letter":
        done = await dead_letter_now(connection_id, message_id, reason=reason, now=now)
    else:
        done = await pending.expedite(connection_id, message_id, now)
    outcome = policy if done else "unknown"
    hub_metrics().nacks.labels(hub=hub, policy=outcome).inc()
    logger.info("Client %s nacked %s (%s): %s", connection_id, message_id, outcome, reason)
    return outcome
