"""Find the user of a negotiate request or WebSocket scope: bearer token first, then the session.

A token that is present but invalid is a failure, not a fall-back to the session, so a client
never runs as someone other than it asked to be.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import parse_qs

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest

from ..conf import conduit_settings

logger = logging.getLogger(__name__)


class InvalidToken(Exception):
    """A token was sent and no validator accepted it."""


def token_from_headers_and_query(headers: Iterable[tuple[bytes, bytes]], query_string: bytes) -> str | None:
    """The token of a request: ``Authorization: Bearer`` header, else ``access_token`` query."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    values = parse_qs(query_string.decode("latin1")).get("access_token")
    if values and values[0]:
        return values[0]
    return None


def token_from_request(request: HttpRequest) -> str | None:
    """The token of a Django request (negotiate, the REST API)."""
    headers = [(b"authorization", request.headers.get("Authorization", "").encode("latin1"))]
    return token_from_headers_and_query(headers, request.META.get("QUERY_STRING", "").encode())


def user_from_token(token: str) -> object:
    """Run the configured validators in order; the first user returned wins.

    Runs synchronously (validators may use the ORM); call through ``database_sync_to_async``
    from async code. Raises ``InvalidToken`` when none accepts the token.
    """
    for validator in conduit_settings.TOKEN_VALIDATORS:
        user = validator(token)
        if user is not None:
            return user
    logger.info("Rejected an access token: no validator accepted it.")
    raise InvalidToken("Invalid or expired access token.")


def user_from_request(request: HttpRequest) -> object:
    """The user of a request: the token's when one is sent, else the session's (maybe anonymous)."""
    token = token_from_request(request)
    if token is not None:
        return user_from_token(token)
    return getattr(request, "user", None) or AnonymousUser()
