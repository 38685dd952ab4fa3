"""Acknowledged sends: persist, register a pending entry per recipient, publish; ack and nack.

The one path of an acknowledged message (``docs/delivery.md``):

1. ``persist`` writes an ``AckedMessage`` row: from here on the message cannot be lost.
2. ``publish`` (through the circuit breaker) resolves the recipient connections from the
   membership registry, registers their pending entries, appends stream targets to the history
   (which gives the ``seq``), publishes to the channel layer and marks the row published.
   When the breaker is open or a call fails, the row stays unpublished ("spooled") and the retry
   pass (``hubs.delivery.retry``) publishes it later.
3. ``acknowledge`` / ``nack`` handle the client's ``AcknowledgeMessage`` / ``NackMessage``.

Retries, dead letters and reconnect redelivery live in ``hubs.delivery.retry``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from ..conf import conduit_settings
from ..metrics import hub_metrics
from ..outbound import Outbound, encode_outbound
from .breaker import get_breaker
from .history import get_history
from .members import get_members
from .pending import get_pending
from .policy import RetryPolicy

logger = logging.getLogger(__name__)


class DeliveryUnavailable(RuntimeError):
    """A fire-and-forget send could not reach the channel layer (it failed, or the breaker is open).

    Acknowledged sends never raise it: they are persisted and go out when the layer is back.
    """


def retry_policy() -> RetryPolicy:
    """The retry policy of the current settings."""
    return RetryPolicy(
        ack_timeout=float(conduit_settings.ACK_TIMEOUT),
        max_retries=int(conduit_settings.MAX_RETRIES),
        retry_backoff=float(conduit_settings.RETRY_BACKOFF),
        retry_backoff_max=float(conduit_settings.RETRY_BACKOFF_MAX),
        retry_jitter=bool(conduit_settings.RETRY_JITTER),
    )


def wants_ack(method: str, ack: bool | None) -> bool:
    """Whether a send of ``method`` is acknowledged: ``ack`` if given, else ``ACK_EVENTS``."""
    if ack is not None:
        return bool(ack)
    return method in conduit_settings.ACK_EVENTS


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def with_position(body: dict[str, Any], seq: int | None, epoch: str | None) -> dict[str, Any]:
    """``body`` with its stream position (when it has one)."""
    if seq is None:
        return body
    return {**body, "seq": seq, "epoch": epoch}


async def persist(
    *,
    hub: str,
    namespace: str,
    layer_alias: str,
    outbound: Outbound,
    targets: Sequence[tuple[str, bool]],
    exclude: Sequence[str],
    now: float,
) -> Any:
    """Write the ``AckedMessage`` row (before anything is sent); returns it."""
    from ..models import AckedMessage

    def create() -> AckedMessage:
        return AckedMessage.objects.create(
            id=outbound.message_id,
            hub=hub,
            namespace=namespace,
            layer_alias=layer_alias,
            method=outbound.method,
            body=outbound.body,
            targets=[[channel, stream] for channel, stream in targets],
            exclude=list(exclude),
            correlation_id=outbound.body.get("correlationId") or "",
            publish_after=_utc(now + float(conduit_settings.PUBLISH_GRACE)),
        )

    return await database_sync_to_async(create)()


async def publish(message: Any, *, now: float | None = None) -> bool:
    """Register the recipients' pending entries and publish ``message`` (an ``AckedMessage``).

    True when it went out; False when it stays spooled (breaker open, or the layer or Redis
    failed: logged and counted), for the retry pass to publish later.
    """
    now = time.time() if now is None else now
    metrics = hub_metrics()
    try:
        seq, epoch, recipients = await get_breaker().call(lambda: _publish(message, now))
    except Exception as exc:  # noqa: BLE001 - any layer or Redis failure spools; never lost
        logger.warning("Acknowledged message %s spooled: %s", message.id, exc)
        metrics.acked_sent.labels(hub=message.hub, method=message.method, outcome="spooled").inc()
        await _set_publish_after(message.id, now)
        return False
    await _mark_published(message.id, seq, epoch, recipients, now)
    metrics.acked_sent.labels(hub=message.hub, method=message.method, outcome="published").inc()
    return True


async def _publish(message: Any, now: float) -> tuple[int | None, str | None, int]:
    channels = [channel for channel, _ in message.targets]
    members = get_members()
    found = await members.resolve(channels)
    # Only connections whose presence lease holds: a member left behind by a server that died
    # would otherwise owe acks nobody can give.
    alive = await members.alive(found)
    recipients = {c: u for c, u in found.items() if c in alive and c not in message.exclude}
    delay = retry_policy().next_delay(0)
    due = now + (delay if delay is not None else float(conduit_settings.ACK_TIMEOUT))
    if recipients:
        await get_pending().register(message.id, recipients, due)
    layer = get_channel_layer(message.layer_alias)
    if layer is None:
        raise RuntimeError(f"No channel layer is configured under alias {message.layer_alias!r}.")
    plain = encode_outbound(message.method, message.body)
    seq: int | None = None
    epoch: str | None = None
    exclude = tuple(message.exclude)
    for channel, stream in message.targets:
        outbound = plain
        if stream:
            position = await get_history().append(channel, message.id, message.method, message.body)
            if seq is None:
                seq, epoch = position.seq, position.epoch
            outbound = encode_outbound(
                message.method, with_position(message.body, position.seq, position.epoch)
            )
        await layer.group_send(channel, outbound.layer_message(exclude))
    return seq, epoch, len(recipients)


async def _mark_published(
    message_id: str, seq: int | None, epoch: str | None, recipients: int, now: float
) -> None:
    from ..models import AckedMessage

    def mark() -> None:
        AckedMessage.objects.filter(pk=message_id).update(
            published_at=_utc(now), seq=seq, epoch=epoch or "", recipients=recipients
        )

    try:
        await database_sync_to_async(mark)()
    except Exception:  # the message went out; a retry pass would publish it again (same id)
        logger.exception("Could not mark acknowledged message %s published.", message_id)
        hub_metrics().errors.labels(where="mark_published").inc()


async def _set_publish_after(message_id: str, now: float) -> None:
    from ..models import AckedMessage

    def update() -> None:
        AckedMessage.objects.filter(pk=message_id, published_at__isnull=True).update(publish_after=_utc(now))

    try:
        await database_sync_to_async(update)()
    except Exception:  # the grace time still brings it back
        logger.exception("Could not expedite spooled message %s.", message_id)
        hub_metrics().errors.labels(where="spool").inc()


async def acknowledge(hub: str, connection_id: str, message_id: str) -> bool:
    """``AcknowledgeMessage``: clear the connection's pending entry; True if there was one."""
    cleared = await get_pending().ack(connection_id, message_id)
    hub_metrics().acks.labels(hub=hub, result="known" if cleared else "unknown").inc()
    return cleared


async def nack(
    hub: str, connection_id: str, message_id: str, reason: str, *, now: float | None = None
) -> str:
    """``NackMessage``: apply ``NACK_POLICY``; returns what was done (retry, dead_letter, unknown).

    ``retry`` makes the entry due now (the retry pass counts it as a failed attempt and sends it
    again, or dead-letters it after the last one); ``dead_letter`` makes it a dead letter at once.
    """
    from .dead_letters import dead_letter_now

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


def expiry_cutoff(now: float) -> datetime:
    """Acknowledged messages created before this are past ``MESSAGE_RETENTION``."""
    return _utc(now) - timedelta(seconds=float(conduit_settings.MESSAGE_RETENTION))
