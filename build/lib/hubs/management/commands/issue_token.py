"""``manage.py issue_token USERNAME [--create] [--ttl SECONDS]``: print an access token."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hubs.auth.tokens import issue_token


class Command(BaseCommand):
    help = "Print a signed, expiring access token for USERNAME (and nothing else) on stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--create", action="store_true", help="Create the user if missing.")
        parser.add_argument("--ttl", type=int, default=None, help="Lifetime in seconds (default TOKEN_TTL).")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        username = options["username"]
        lookup = {user_model.USERNAME_FIELD: username}
        try:
            user = user_model._default_manager.get(**lookup)
        except user_model.DoesNotExist:
            if not options["create"]:
                raise CommandError(f"No user {username!r}; pass --create to create one.") from None
            user = user_model._default_manager.create_user(**lookup)
        if options["ttl"] is not None and options["ttl"] <= 0:
            raise CommandError("--ttl must be a positive number of seconds.")
        self.stdout.write(issue_token(user, ttl=options["ttl"]))
