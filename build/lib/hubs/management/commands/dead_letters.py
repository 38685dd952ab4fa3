"""``manage.py dead_letters list|requeue|purge``: inspect, requeue and delete dead letters.

- ``list [--hub H] [--method M] [--reason R] [--limit N]``: one tab-separated line per dead letter
  on stdout, newest first: message id, method, connection id, user id (``-`` if none), attempts,
  reason, dead since (ISO 8601), last error (shortened to one line). The count goes to stderr.
- ``requeue (--all | MESSAGE_ID ...)``: deliver again (acknowledged) every dead letter of those
  message ids, one line per dead letter on stdout saying where it went. Refuses, before requeueing
  anything, when an id has no dead letter. Needs ``REDIS_URL``: the requeued message is handed to
  the shared channel layer and pending store, which only another process's server can see
  through Redis (in the embedded mode, use the admin action, which runs in the server).
- ``purge (--all | MESSAGE_ID ... | --older-than SECONDS)``: delete, and print how many.
  Refuses, before deleting anything, when a message id has no dead letter.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone

from hubs.conf import conduit_settings
from hubs.delivery.dead_letters import Requeued, purge, requeue
from hubs.loop_thread import to_sync
from hubs.models import DeadLetter

ERROR_WIDTH = 120


def one_line(text: str, width: int = ERROR_WIDTH) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``width`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class Command(BaseCommand):
    help = (
        "List, requeue or purge dead letters (acknowledged messages a recipient never acknowledged). "
        "Requeue needs REDIS_URL; in the embedded mode use the admin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="{list,requeue,purge}", required=True)

        listing = actions.add_parser("list", help="One line per dead letter, starting with its message id.")
        listing.add_argument("--hub", help="Only this hub (its hub name).")
        listing.add_argument("--method", help="Only this client method.")
        listing.add_argument("--reason", choices=DeadLetter.Reason.values, help="Only this reason.")
        listing.add_argument("--limit", type=int, default=None, help="At most N lines (newest first).")

        again = actions.add_parser("requeue", help="Deliver dead letters again, acknowledged.")
        which = again.add_mutually_exclusive_group(required=True)
        which.add_argument("message_ids", nargs="*", default=[], metavar="MESSAGE_ID")
        which.add_argument("--all", action="store_true", help="Every dead letter.")

        remove = actions.add_parser("purge", help="Delete dead letters.")
        which = remove.add_mutually_exclusive_group(required=True)
        which.add_argument("message_ids", nargs="*", default=[], metavar="MESSAGE_ID")
        which.add_argument("--all", action="store_true", help="Every dead letter.")
        which.add_argument(
            "--older-than", type=float, metavar="SECONDS", help="Those dead for more than SECONDS."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        handlers = {"list": self.list_rows, "requeue": self.requeue_rows, "purge": self.purge_rows}
        handlers[options["action"]](options)

    # --- list ---------------------------------------------------------------------------------

    def list_rows(self, options: dict[str, Any]) -> None:
        if options["limit"] is not None and options["limit"] <= 0:
            raise CommandError("--limit must be a positive number.")
        rows = DeadLetter.objects.order_by("-created_at", "-pk")
        for field in ("hub", "method", "reason"):
            if options[field]:
                rows = rows.filter(**{field: options[field]})
        if options["limit"] is not None:
            rows = rows[: options["limit"]]
        count = 0
        for row in rows:
            fields = (
                row.message_id,
                row.method,
                row.connection_id,
                row.user_id or "-",
                str(row.attempts),
                row.reason,
                row.created_at.isoformat(),
                one_line(row.last_error) or "-",
            )
            self.stdout.write("\t".join(fields))
            count += 1
        self.stderr.write(f"{count} dead letter(s).")

    # --- requeue ------------------------------------------------------------------------------

    def requeue_rows(self, options: dict[str, Any]) -> None:
        if not conduit_settings.REDIS_URL:
            raise CommandError(
                "Requeue from another process needs Redis (REDIS_URL): in the embedded mode the "
                "channel layer and the pending store live in the server's memory, which this "
                "command cannot reach. Use the admin's 'Requeue selected dead letters' action, "
                "which runs in the server process."
            )
        rows = list(self.selected(options).order_by("created_at", "pk"))
        done = {r.dead_letter_id: r for r in to_sync(requeue)([row.pk for row in rows])}
        for row in rows:
            self.stdout.write(self.describe(row, done.get(row.pk)))
        self.stderr.write(f"Requeued {len(done)} dead letter(s).")

    @staticmethod
    def describe(row: DeadLetter, result: Requeued | None) -> str:
        head = f"{row.message_id}\t{row.connection_id}\t"
        if result is None:
            return head + "already gone (requeued or purged meanwhile)"
        if not result.waiting:
            return head + "delivered to " + ", ".join(result.connections)
        if row.user_id:
            return head + f"waiting for a connection of user {row.user_id}"
        return head + "waiting for the connection to come back"

    # --- purge --------------------------------------------------------------------------------

    def purge_rows(self, options: dict[str, Any]) -> None:
        if options["older_than"] is not None:
            if options["older_than"] < 0:
                raise CommandError("--older-than must not be negative.")
            cutoff = timezone.now() - timedelta(seconds=options["older_than"])
            rows = DeadLetter.objects.filter(created_at__lt=cutoff)
        else:
            rows = self.selected(options)
        deleted = purge(list(rows.values_list("pk", flat=True)))
        self.stdout.write(f"Purged {deleted} dead letter(s).")

    # --- shared -------------------------------------------------------------------------------

    @staticmethod
    def selected(options: dict[str, Any]) -> QuerySet:
        """All dead letters (``--all``) or those of the message ids; unknown ids are an error."""
        if options["all"]:
            return DeadLetter.objects.all()
        wanted = list(dict.fromkeys(options["message_ids"]))
        rows = DeadLetter.objects.filter(message_id__in=wanted)
        known = set(rows.values_list("message_id", flat=True))
        unknown = [m for m in wanted if m not in known]
        if unknown:
            raise CommandError(f"No dead letter for message id(s): {', '.join(unknown)}. Nothing was done.")
        return rows
