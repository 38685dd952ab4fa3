"""``manage.py ensure_demo_user``: create the demo staff user ``demo``/``demo`` if it is missing."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create a staff user for the demo page and the admin (embedded mode only; never in production)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        if user_model._default_manager.filter(username=options["username"]).exists():
            return
        user_model._default_manager.create_superuser(
            username=options["username"], password=options["password"], email=""
        )
        self.stdout.write(
            f"Created the demo user {options['username']!r} (password {options['password']!r})."
        )
