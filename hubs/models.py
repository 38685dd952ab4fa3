"""Models of the hubs app: acknowledged messages and dead letters (``docs/delivery.md``)."""

from __future__ import annotations

from django.db import models


class AckedMessage(models.Model):
    """An acknowledged server event, written before it is sent (``asend(..., ack=True)``).

    The row is the durable copy that retries, reconnect redelivery and dead-letter requeues send
    again; who still owes an acknowledgement lives in the pending store (Redis or memory). A row
    whose ``published_at`` is empty has not reached the channel layer yet (the breaker was open,
    or the sender died): the retry pass publishes it once ``publish_after`` has passed.
    """

    id = models.CharField("message id", max_length=64, primary_key=True)
    hub = models.CharField(max_length=100)
    namespace = models.CharField(max_length=100, help_text="The hub's group namespace (user channels).")
    layer_alias = models.CharField(max_length=100, default="default")
    method = models.CharField(max_length=200)
    body = models.JSONField(help_text="The event's object with its envelope (retryCount 0, no seq).")
    targets = models.JSONField(help_text="Channels groups as [name, is_stream] pairs.")
    exclude = models.JSONField(default=list, blank=True, help_text="Connection ids left out.")
    correlation_id = models.CharField(max_length=200, blank=True, default="")
    seq = models.BigIntegerField(null=True, blank=True)
    epoch = models.CharField(max_length=64, blank=True, default="")
    recipients = models.PositiveIntegerField(null=True, blank=True, help_text="Connections at publish.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)
    publish_after = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "acknowledged message"

    def __str__(self) -> str:
        return f"{self.method} {self.id}"


class DeadLetter(models.Model):
    """A message one recipient never acknowledged (or refused), after its last attempt.

    Self-contained (the message's body is copied), so it outlives the retention of
    ``AckedMessage``. Requeueing sends it again and deletes the row.
    """

    class Reason(models.TextChoices):
        NO_ACK = "no_ack", "No acknowledgement"
        NACKED = "nacked", "Refused by the client"
        EXPIRED = "expired", "Message expired"

    message_id = models.CharField(max_length=64, db_index=True)
    hub = models.CharField(max_length=100, db_index=True)
    namespace = models.CharField(max_length=100)
    layer_alias = models.CharField(max_length=100, default="default")
    method = models.CharField(max_length=200, db_index=True)
    body = models.JSONField()
    connection_id = models.CharField(max_length=100, db_index=True)
    user_id = models.CharField(max_length=100, blank=True, default="", db_index=True)
    attempts = models.PositiveIntegerField(help_text="Sends made, the first one included.")
    reason = models.CharField(max_length=16, choices=Reason.choices, db_index=True)
    last_error = models.TextField(blank=True, default="")
    first_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField("dead since", auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["message_id", "connection_id"], name="dead_letter_once_per_recipient"
            )
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.message_id} → {self.connection_id}"
