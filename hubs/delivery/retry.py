"""The retry pass: the one layer that sends unacknowledged messages again.

``deliver_due`` runs every ``RETRY_INTERVAL`` seconds, from the Celery beat task
``hubs.deliver_due`` in production or from a loop in each server process in the embedded mode
(``hubs.delivery.runner``), never both (``RETRY_RUNNER``). One pass:

1. publishes acknowledged messages that are still spooled (the breaker was open or Redis failed
   when they were sent), oldest first;
2. claims the pending entries that are due (leased, so two workers never take the same one) and,
   for each, either sends the message again to that connection with ``retryCount + 1`` and the
   next due time from the retry policy, or, after ``MAX_RETRIES`` retries, makes it a dead letter.

``adopt_and_redeliver`` does step 2 at once for the entries a user's new connection takes over
when it is established.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.layers import get_channel_layer

from ..conf import conduit_settings
from ..fanout import group_send
from ..metrics import hub_metrics
from ..naming import connection_channel, user_channel
from ..outbound import encode_outbound
from .acked import publish, retry_policy, utc, with_position
from .breaker import BreakerState, get_breaker
from .db_thread import run_in_db_thread
from .dead_letters import dead_letter
from .members import get_members
from .pending import PendingEntry, get_pending

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PassResult:
    """What one retry pass did."""

    published: int = 0
    resent: int = 0
    dead_lettered: int = 0
    orphaned: int = 0
    skipped: bool = False


def _lease() -> float:
    """How long a claimed entry is reserved for the pass that claimed it (a pass takes
    milliseconds; a pass that died gives its entries back after this)."""
    return max(5.0, 5 * float(conduit_settings.RETRY_INTERVAL))


async def deliver_due(*, now: float | None = None, limit: int | None = None) -> PassResult:
    """Run one retry pass at wall time ``now`` (seconds since the epoch)."""
    now = time.time() if now is None else now
    limit = int(conduit_settings.RETRY_BATCH_SIZE) if limit is None else limit
    result = PassResult()
    if get_breaker().state is BreakerState.OPEN:
        result.skipped = True
        hub_metrics().retry_passes.labels(outcome="skipped").inc()
        return result
    try:
        result.published = await publish_spooled(now=now, limit=limit)
        entries = await get_breaker().call(lambda: get_pending().claim_due(now, limit, _lease()))
        messages = await _load_messages({e.message_id for e in entries})
        entries = await _follow_vanished(entries, messages, now)
        missing = {e.message_id for e in entries} - set(messages)
        messages.update(await _load_messages(missing))
        for entry in entries:
            await _process(entry, messages.get(entry.message_id), now, result)
    except Exception:
        hub_metrics().retry_passes.labels(outcome="error").inc()
        raise
    hub_metrics().retry_passes.labels(outcome="ok").inc()
    return result


async def publish_spooled(*, now: float, limit: int) -> int:
    """Publish acknowledged messages whose ``publish_after`` passed, oldest first."""
    from ..models import AckedMessage

    cutoff = utc(now)
    lease_until = cutoff + timedelta(seconds=_lease())

    def claim() -> list[Any]:
        claimed = []
        rows = AckedMessage.objects.filter(published_at__isnull=True, publish_after__lte=cutoff).order_by(
            "created_at"
        )[:limit]
        for row in rows:
            # Taken by whoever moves publish_after first: two passes never publish one row.
            if AckedMessage.objects.filter(pk=row.pk, publish_after=row.publish_after).update(
                publish_after=lease_until
            ):
                claimed.append(row)
        return claimed

    published = 0
    for row in await run_in_db_thread(claim):
        if not await publish(row, now=now):
            break  # the layer is still down: the rest stays spooled, in order
        published += 1
    return published


async def _load_messages(message_ids: Iterable[str]) -> dict[str, Any]:
    from ..models import AckedMessage

    ids = list(message_ids)
    if not ids:
        return {}
    return await run_in_db_thread(lambda: AckedMessage.objects.in_bulk(ids))


async def _follow_vanished(
    entries: list[PendingEntry], messages: dict[str, Any], now: float
) -> list[PendingEntry]:
    """Entries of connections that are gone (their presence lease ran out) move to a live
    connection of the same user, which then gets them: a user who reconnected before the old
    connection's lease ran out still receives what the old one owed."""
    members = get_members()
    alive = await members.alive({e.connection_id for e in entries})
    vanished = [
        e
        for e in entries
        if e.connection_id not in alive and e.user_id is not None and e.message_id in messages
    ]
    if not vanished:
        return entries
    kept = [e for e in entries if e not in vanished]
    by_user: dict[tuple[str, str], list[PendingEntry]] = {}
    for entry in vanished:
        assert entry.user_id is not None
        by_user.setdefault((messages[entry.message_id].namespace, entry.user_id), []).append(entry)
    max_attempts = max(0, int(conduit_settings.MAX_RETRIES) - 1)
    for (namespace, user_id), stale in by_user.items():
        live = set(await members.resolve_alive([user_channel(namespace, user_id)]))
        if not live:
            kept.extend(stale)  # nowhere to go yet: the schedule runs on
            continue
        heir = sorted(live)[0]
        moved = await get_pending().adopt(user_id, heir, live, now + _lease(), max_attempts)
        logger.info("Moved %d pending message(s) of user %s to connection %s.", len(moved), user_id, heir)
        kept.extend(moved)
    return kept


async def _process(
    entry: PendingEntry, message: Any, now: float, result: PassResult, *, force: bool = False
) -> None:
    """Send ``entry``'s message again, or dead-letter it after the last attempt.

    ``force`` sends even after the last attempt (a reconnect redelivery gets one more try).
    """
    pending = get_pending()
    policy = retry_policy()
    if message is None:
        # No stored copy: its sender may still be writing it (entries are registered just before
        # the row), or it is past MESSAGE_RETENTION, or its sender died before it was accepted.
        # Wait like a retry; drop it (logged, counted) when the schedule runs out.
        if entry.attempts < policy.max_retries:
            await pending.reschedule(entry, now + policy.ack_timeout)
            return
        logger.error(
            "Pending message %s for %s has no stored copy; dropped.", entry.message_id, entry.connection_id
        )
        hub_metrics().errors.labels(where="pending_orphan").inc()
        await pending.drop(entry)
        result.orphaned += 1
        return
    if entry.attempts >= policy.max_retries and not force:
        from ..models import DeadLetter

        error = f"No acknowledgement after {entry.attempts + 1} attempt(s)."
        await dead_letter(entry, message, reason=DeadLetter.Reason.NO_ACK, error=error)
        result.dead_lettered += 1
        return
    retry_count = entry.attempts + 1
    delay = policy.next_delay(retry_count)
    due = now + (delay if delay is not None else policy.ack_timeout)
    if not await pending.reschedule(entry, due):
        return  # acknowledged meanwhile
    body = with_position({**message.body, "retryCount": retry_count}, message.seq, message.epoch or None)
    outbound = encode_outbound(message.method, body)
    layer = get_channel_layer(message.layer_alias)
    await get_breaker().call(
        lambda: group_send(
            layer, connection_channel(entry.connection_id), outbound.layer_message(redeliver=True)
        )
    )
    hub_metrics().retries.labels(hub=message.hub, method=message.method, kind="retry").inc()
    result.resent += 1


async def adopt_and_redeliver(*, user_id: str, connection_id: str, now: float | None = None) -> int:
    """A user's new connection takes over what the user's vanished connections still owe an ack
    for, and gets it at once. Runs when a connection of an authenticated user is established."""
    now = time.time() if now is None else now
    pending = get_pending()
    # Only the user's connections that had entries matter, and only those of them still alive
    # keep theirs: one read when the user owes nothing, whatever number of connections it has.
    owing = await pending.owing(user_id)
    owing.discard(connection_id)
    if not owing:
        return 0
    live = await get_members().alive(owing)
    max_attempts = max(0, int(conduit_settings.MAX_RETRIES) - 1)
    moved = await pending.adopt(user_id, connection_id, live, now + _lease(), max_attempts)
    if not moved:
        return 0
    messages = await _load_messages({e.message_id for e in moved})
    result = PassResult()
    oldest = datetime.min.replace(tzinfo=UTC)
    for entry in sorted(moved, key=lambda e: getattr(messages.get(e.message_id), "created_at", oldest)):
        await _process(entry, messages.get(entry.message_id), now, result, force=True)
    logger.info("Connection %s of user %s adopted %d pending message(s).", connection_id, user_id, len(moved))
    return result.resent
