"""``manage.py notify_task TASK_ID --progress N [--message TEXT]``: send a TaskProgress."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conduit_rt.demo import task_events


class Command(BaseCommand):
    help = "Send a TaskProgress event for TASK_ID to its subscribers (needs REDIS_URL to reach a server)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_id")
        parser.add_argument("--progress", type=int, required=True, help="Percentage, 0 to 100.")
        parser.add_argument("--message", default=None)
        parser.add_argument("--status", default="running")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            message_id = task_events.task_progress(
                options["task_id"],
                options["progress"],
                status=options["status"],
                message=options["message"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(message_id)
