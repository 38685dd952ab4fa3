"""Dead letters: messages one recipient never acknowledged, or refused; requeue, purge, retention.

A dead letter is created by the retry pass after the last attempt, or at once by a
``NackMessage`` under ``NACK_POLICY = "dead_letter"``. Requeueing (admin action or
``manage.py dead_letters requeue``) removes the row and delivers the message again, acknowledged,
to the recipient connection if it is still connected, else to its user's current connections,
else it waits in the pending store for the user's next connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from channels.layers import get_channel_layer

from ..conf import conduit_settings
from ..delivery_metrics import record_failure
from ..fanout import group_send
from ..metrics import hub_metrics
from ..naming import connection_channel, user_channel
from ..outbound import encode_outbound
from .acked import first_due, utc, with_position
from .db_thread import run_in_db_thread
from .members import get_members
from .pending import PendingEntry, get_pending

logger = logging.getLogger(__name__)


async def dead_letter(entry: PendingEntry, message: Any, *, reason: str, error: str) -> None:
    """Store ``message`` as a dead letter for ``entry``'s connection and forget the entry."""
    from ..models import DeadLetter

    def create() -> None:
        DeadLetter.objects.get_or_create(
            message_id=message.id,
            connection_id=entry.connection_id,
            defaults={
                "hub": message.hub,
                "namespace": message.namespace,
                "layer_alias": message.layer_alias,
                "method": message.method,
                "body": with_position(message.body, message.seq, message.epoch or None),
                "user_id": entry.user_id or "",
                "attempts": entry.attempts + 1,
                "reason": reason,
                "last_error": error,
                "first_sent_at": message.published_at or message.created_at,
            },
        )

    await run_in_db_thread(create)  # first: a crash here leaves the entry pending, not lost
    await get_pending().drop(entry)
    hub_metrics().dead_letters.labels(hub=message.hub, method=message.method, reason=reason).inc()
    record_failure(message.hub, message.method, "dead_letter")
    logger.warning(
        "Message %s (%s) to %s is a dead letter after %d attempt(s): %s",
        message.id,
        message.method,
        entry.connection_id,
        entry.attempts + 1,
        error,
    )


async def load_message(message_id: str) -> Any:
    """The ``AckedMessage`` row, or None when it is gone (past retention)."""
    from ..models import AckedMessage

    return await run_in_db_thread(lambda: AckedMessage.objects.filter(pk=message_id).first())


async def dead_letter_now(connection_id: str, message_id: str, *, reason: str, now: float) -> bool:
    """Dead-letter a pending message of one connection at once (a refused message)."""
    entries = [e for e in await get_pending().for_connection(connection_id) if e.message_id == message_id]
    if not entries:
        return False
    message = await load_message(message_id)
    if message is None:
        await get_pending().drop(entries[0])
        return False
    from ..models import DeadLetter

    await dead_letter(entries[0], message, reason=DeadLetter.Reason.NACKED, error=f"Nacked: {reason}"[:2000])
    return True


@dataclass(frozen=True, slots=True)
class Requeued:
    """Where a requeued dead letter went."""

    dead_letter_id: int
    message_id: str
    connections: tuple[str, ...]
    waiting: bool  # no live recipient: it waits for the user's (or connection's) next connection


async def requeue(dead_letter_ids: Iterable[int], *, now: float | None = None) -> list[Requeued]:
    """Deliver dead letters again (acknowledged) and delete them; returns where each went.

    A row that someone else requeued or purged at the same moment is skipped (not in the
    result): the pending entry is registered first, then the row is claimed by deleting it, and
    only the claimer sends. A crash between the two leaves the row and a pending entry: the
    message is retried and stays listed, never lost.
    """
    from ..models import DeadLetter

    now = time.time() if now is None else now
    rows = await run_in_db_thread(lambda: list(DeadLetter.objects.filter(pk__in=list(dead_letter_ids))))
    done = []
    for row in rows:
        result = await _requeue_one(row, now)
        if result is not None:
            done.append(result)
    return done


async def _requeue_one(row: Any, now: float) -> Requeued | None:
    from ..models import AckedMessage, DeadLetter

    members = get_members()
    live = await members.resolve_alive([connection_channel(row.connection_id)])
    if not live and row.user_id:
        live = await members.resolve_alive([user_channel(row.namespace, row.user_id)])
    recipients = live or {row.connection_id: row.user_id or None}
    body = {k: v for k, v in row.body.items() if k not in ("seq", "epoch")}

    def restore() -> None:
        AckedMessage.objects.update_or_create(
            id=row.message_id,
            defaults={
                "hub": row.hub,
                "namespace": row.namespace,
                "layer_alias": row.layer_alias,
                "method": row.method,
                "body": body,
                "targets": [[connection_channel(c), False] for c in recipients],
                "seq": row.body.get("seq"),
                "epoch": row.body.get("epoch") or "",
                "published_at": utc(now),
                "publish_after": utc(now),
                "recipients": len(recipients),
            },
        )

    await run_in_db_thread(restore)
    await get_pending().register(row.message_id, recipients, first_due(now))
    deleted, _ = await run_in_db_thread(lambda: DeadLetter.objects.filter(pk=row.pk).delete())
    if not deleted:
        return None  # requeued or purged by someone else meanwhile: they deliver it
    if live:
        sent = {**row.body, "retryCount": row.attempts}
        outbound = encode_outbound(row.method, sent)
        layer = get_channel_layer(row.layer_alias)
        for connection_id in live:
            await group_send(layer, connection_channel(connection_id), outbound.layer_message(redeliver=True))
    hub_metrics().retries.labels(hub=row.hub, method=row.method, kind="requeue").inc()
    logger.info("Dead letter %s requeued to %s.", row.message_id, ", ".join(recipients))
    return Requeued(row.pk, row.message_id, tuple(live), waiting=not live)


def purge(dead_letter_ids: Iterable[int] | None = None) -> int:
    """Delete dead letters (all of them when ``dead_letter_ids`` is None); returns how many."""
    from ..models import DeadLetter

    rows = (
        DeadLetter.objects.all()
        if dead_letter_ids is None
        else DeadLetter.objects.filter(pk__in=list(dead_letter_ids))
    )
    deleted, _ = rows.delete()
    return deleted


@dataclass(frozen=True, slots=True)
class Retention:
    """What one retention run deleted."""

    dead_letters: int
    messages: int


def apply_retention(now: float | None = None) -> Retention:
    """Delete dead letters older than ``DEAD_LETTER_RETENTION`` and published acknowledged
    messages older than ``MESSAGE_RETENTION``."""
    from ..models import AckedMessage, DeadLetter

    moment = utc(time.time() if now is None else now)
    dead_cutoff = moment - timedelta(seconds=float(conduit_settings.DEAD_LETTER_RETENTION))
    message_cutoff = moment - timedelta(seconds=float(conduit_settings.MESSAGE_RETENTION))
    dead, _ = DeadLetter.objects.filter(created_at__lt=dead_cutoff).delete()
    messages, _ = AckedMessage.objects.filter(
        created_at__lt=message_cutoff, published_at__isnull=False
    ).delete()
    return Retention(dead_letters=dead, messages=messages)
