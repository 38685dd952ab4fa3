"""Admin of the hubs app: acknowledged messages and dead letters (requeue, purge).

Acknowledged messages and dead letters are records the delivery layer writes, so both are
read-only here: nobody adds or edits them by hand. Dead letters can be requeued (delivered again,
acknowledged; see ``hubs.delivery.dead_letters.requeue``) or purged; both actions remove the row,
so both need the delete permission. Acknowledged messages cannot be deleted here either: a
message that is still pending would then be lost without a dead letter (retention deletes them).
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from .delivery.dead_letters import purge, requeue
from .models import AckedMessage, DeadLetter


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON in a ``<pre>`` block (escaped)."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre style="margin: 0; white-space: pre-wrap">{}</pre>', text)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the delivery layer: viewable, never added or edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PublishedStateFilter(admin.SimpleListFilter):
    """Spooled (persisted, not yet on the channel layer) or published."""

    title = "published state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("spooled", "Spooled (not yet published)"), ("published", "Published")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "spooled":
            return queryset.filter(published_at__isnull=True)
        if self.value() == "published":
            return queryset.filter(published_at__isnull=False)
        return queryset


@admin.register(AckedMessage)
class AckedMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "method", "hub", "recipients", "seq", "created_at", "published_at", "spooled")
    list_filter = ("hub", "method", PublishedStateFilter)
    search_fields = ("id", "correlation_id")
    date_hierarchy = "created_at"
    fields = (
        "id",
        "hub",
        "namespace",
        "layer_alias",
        "method",
        "pretty_body",
        "pretty_targets",
        "pretty_exclude",
        "correlation_id",
        "seq",
        "epoch",
        "recipients",
        "created_at",
        "published_at",
        "publish_after",
    )
    readonly_fields = fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(boolean=True, description="spooled", ordering="published_at")
    def spooled(self, obj: AckedMessage) -> bool:
        return obj.published_at is None

    @admin.display(description="body")
    def pretty_body(self, obj: AckedMessage) -> str:
        return pretty_json(obj.body)

    @admin.display(description="targets")
    def pretty_targets(self, obj: AckedMessage) -> str:
        return pretty_json(obj.targets)

    @admin.display(description="exclude")
    def pretty_exclude(self, obj: AckedMessage) -> str:
        return pretty_json(obj.exclude)


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = (
        "message_id",
        "method",
        "hub",
        "connection_id",
        "user_id",
        "attempts",
        "reason",
        "created_at",
        "first_sent_at",
    )
    list_filter = ("reason", "hub", "method", "created_at")
    search_fields = ("message_id", "connection_id", "user_id", "last_error")
    date_hierarchy = "created_at"
    actions = ("requeue_dead_letters", "purge_dead_letters")
    fields = (
        "message_id",
        "hub",
        "namespace",
        "layer_alias",
        "method",
        "pretty_body",
        "connection_id",
        "user_id",
        "attempts",
        "reason",
        "last_error",
        "first_sent_at",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="body")
    def pretty_body(self, obj: DeadLetter) -> str:
        return pretty_json(obj.body)

    @admin.action(description="Requeue selected dead letters", permissions=["delete"])
    def requeue_dead_letters(self, request: HttpRequest, queryset: QuerySet) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        done = async_to_sync(requeue)(ids)
        delivered = [r for r in done if not r.waiting]
        connections = {c for r in delivered for c in r.connections}
        waiting = len(done) - len(delivered)
        gone = len(ids) - len(done)
        text = (
            f"Requeued {len(done)} dead letter(s): {len(delivered)} delivered to "
            f"{len(connections)} live connection(s), {waiting} waiting for the recipient to reconnect."
        )
        if gone:
            text += f" {gone} were already gone (requeued or purged meanwhile)."
        self.message_user(request, text, messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Purge selected dead letters", permissions=["delete"])
    def purge_dead_letters(self, request: HttpRequest, queryset: QuerySet) -> None:
        deleted = purge(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Purged {deleted} dead letter(s).", messages.SUCCESS)
