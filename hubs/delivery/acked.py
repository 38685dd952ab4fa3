"""Acknowledged sends: register a pending entry per recipient, persist, publish.

The one path of an acknowledged message (``docs/delivery.md``), ``send``:

1. **Prepare**, through the circuit breaker: append to each target group's history (the ``seq``)
   and, at the same time, resolve the recipients (members whose presence lease holds) and
   register their pending entries (on Redis one script does both: one round trip in all).
2. **Persist** the ``AckedMessage`` row, with its ``seq``. The send returns only after this: from
   here on the message cannot be lost. One database write per message, in the process's delivery
   database thread (``db_thread``), which keeps its connection between writes.
3. **Publish** to the channel layer. If this fails the pending entries are already there: the
   retry pass sends it to each recipient.

When step 1 fails (the breaker is open, Redis is down) the row is written *spooled*
(``published_at`` empty) and the retry pass (``hubs.delivery.retry``) runs ``publish`` on it once
the layer is back. A sender that dies before step 2 returned nothing to its caller: the message
was never accepted (a history entry or pending entries it left are harmless: entries without a
row are dropped after their retries, ``pending_orphan``).

The client's answers, ``AcknowledgeMessage`` and ``NackMessage``, are ``hubs.delivery.receipts``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from channels.layers import get_channel_layer

from ..conf import conduit_settings
from ..fanout import group_send
from ..metrics import hub_metrics
from ..outbound import Outbound, encode_outbound
from .breaker import get_breaker
from .db_thread import run_in_db_thread
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


def utc(seconds: float) -> datetime:
    """Wall-clock seconds as an aware UTC datetime (what the models store)."""
    return datetime.fromtimestamp(seconds, UTC)


def first_due(now: float) -> float:
    """When a message sent at ``now`` is due for its first retry (``ACK_TIMEOUT`` plus the first
    backoff, or only the timeout when no retry is allowed)."""
    delay = retry_policy().next_delay(0)
    return now + (delay if delay is not None else float(conduit_settings.ACK_TIMEOUT))


def with_position(body: dict[str, Any], seq: int | None, epoch: str | None) -> dict[str, Any]:
    """``body`` with its stream position (when it has one)."""
    if seq is None:
        return body
    return {**body, "seq": seq, "epoch": epoch}


async def send(
    *,
    hub: str,
    namespace: str,
    layer_alias: str,
    outbound: Outbound,
    targets: Sequence[tuple[str, bool]],
    exclude: Sequence[str],
    now: float | None = None,
) -> str:
    """Send ``outbound`` acknowledged (the facade's ``ack=True``); returns its message id once
    it is persisted, published or spooled. Raises only when the database write fails."""
    now = time.time() if now is None else now
    metrics = hub_metrics()
    prepared: Prepared | None = None
    try:
        prepared = await get_breaker().call(
            lambda: _prepare(outbound.message_id, outbound.method, outbound.body, targets, exclude, now)
        )
    except Exception as exc:  # noqa: BLE001 - any layer or Redis failure spools; never lost
        logger.warning("Acknowledged message %s spooled: %s", outbound.message_id, exc)
    await persist(
        hub=hub,
        namespace=namespace,
        layer_alias=layer_alias,
        outbound=outbound,
        targets=targets,
        exclude=exclude,
        prepared=prepared,
        now=now,
    )
    if prepared is None:
        metrics.acked_sent.labels(hub=hub, method=outbound.method, outcome="spooled").inc()
        return outbound.message_id
    try:
        await get_breaker().call(lambda: _group_send(layer_alias, outbound, prepared, exclude))
    except Exception:
        # Registered already: the retry pass sends it to every recipient after ACK_TIMEOUT.
        logger.exception(
            "Acknowledged message %s: publish failed; retries will deliver it.", outbound.message_id
        )
        metrics.errors.labels(where="acked_publish").inc()
    metrics.acked_sent.labels(hub=hub, method=outbound.method, outcome="published").inc()
    return outbound.message_id


@dataclass(frozen=True, slots=True)
class Prepared:
    """What ``_prepare`` did: each target with its stream position (None for a plain group), in
    the sender's order, and how many recipients got a pending entry."""

    targets: list[tuple[str, int | None, str | None]]
    recipients: int

    @property
    def first(self) -> tuple[int | None, str | None]:
        """The first stream position (the one the row keeps and retries carry)."""
        for _, seq, epoch in self.targets:
            if seq is not None:
                return seq, epoch
        return None, None


async def _prepare(
    message_id: str,
    method: str,
    body: dict[str, Any],
    targets: Sequence[tuple[str, bool]],
    exclude: Sequence[str],
    now: float,
) -> Prepared:
    async def stamp() -> list[tuple[str, int | None, str | None]]:
        stamped: list[tuple[str, int | None, str | None]] = []
        for channel, stream in targets:
            if stream:
                position = await get_history().append(channel, message_id, method, body)
                stamped.append((channel, position.seq, position.epoch))
            else:
                stamped.append((channel, None, None))
        return stamped

    # Independent: the history append and the recipients' registration go to Redis together
    # (one script resolves the live members and registers them).
    channels = [channel for channel, _ in targets]
    stamped, recipients = await asyncio.gather(
        stamp(), get_pending().register_members(message_id, get_members(), channels, exclude, first_due(now))
    )
    return Prepared(stamped, recipients)


async def _group_send(
    layer_alias: str, outbound: Outbound, prepared: Prepared, exclude: Sequence[str]
) -> None:
    layer = get_channel_layer(layer_alias)
    if layer is None:
        raise RuntimeError(f"No channel layer is configured under alias {layer_alias!r}.")
    for channel, seq, epoch in prepared.targets:  # a stream target carries its own seq
        record = (
            outbound
            if seq is None
            else encode_outbound(outbound.method, with_position(outbound.body, seq, epoch))
        )
        await group_send(layer, channel, record.layer_message(tuple(exclude)))


async def persist(
    *,
    hub: str,
    namespace: str,
    layer_alias: str,
    outbound: Outbound,
    targets: Sequence[tuple[str, bool]],
    exclude: Sequence[str],
    prepared: Prepared | None,
    now: float,
) -> Any:
    """Write the ``AckedMessage`` row; spooled (unpublished) when ``prepared`` is None."""
    from ..models import AckedMessage

    seq, epoch = prepared.first if prepared is not None else (None, None)

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
            seq=seq,
            epoch=epoch or "",
            recipients=prepared.recipients if prepared is not None else None,
            published_at=utc(now) if prepared is not None else None,
            publish_after=utc(now),
        )

    return await run_in_db_thread(create)


async def publish(message: Any, *, now: float | None = None) -> bool:
    """Publish a spooled ``AckedMessage`` (the retry pass does): prepare, send, mark published.

    True when it went out; False when it stays spooled (breaker open, or the layer or Redis
    failed: logged and counted).
    """
    now = time.time() if now is None else now
    metrics = hub_metrics()
    targets = [(channel, bool(stream)) for channel, stream in message.targets]
    outbound = encode_outbound(message.method, message.body)
    try:
        prepared = await get_breaker().call(
            lambda: _prepare(message.id, message.method, message.body, targets, message.exclude, now)
        )
        await get_breaker().call(
            lambda: _group_send(message.layer_alias, outbound, prepared, message.exclude)
        )
    except Exception as exc:  # noqa: BLE001 - any layer or Redis failure keeps it spooled
        logger.warning("Spooled message %s still not published: %s", message.id, exc)
        await _set_publish_after(message.id, now)
        return False
    seq, epoch = prepared.first
    await _mark_published(message.id, seq, epoch, prepared.recipients, now)
    metrics.acked_sent.labels(hub=message.hub, method=message.method, outcome="published").inc()
    return True


async def _mark_published(
    message_id: str, seq: int | None, epoch: str | None, recipients: int, now: float
) -> None:
    from ..models import AckedMessage

    def mark() -> None:
        AckedMessage.objects.filter(pk=message_id).update(
            published_at=utc(now), seq=seq, epoch=epoch or "", recipients=recipients
        )

    try:
        await run_in_db_thread(mark)
    except Exception:  # the message went out; a later pass would publish it again (same id)
        logger.exception("Could not mark acknowledged message %s published.", message_id)
        hub_metrics().errors.labels(where="mark_published").inc()


async def _set_publish_after(message_id: str, now: float) -> None:
    from ..models import AckedMessage

    def update() -> None:
        AckedMessage.objects.filter(pk=message_id, published_at__isnull=True).update(publish_after=utc(now))

    try:
        await run_in_db_thread(update)
    except Exception:  # the grace time still brings it back
        logger.exception("Could not expedite spooled message %s.", message_id)
        hub_metrics().errors.labels(where="spool").inc()
