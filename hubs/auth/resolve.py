"""Find the user of a negotiate request or WebSocket: bearer token first, then the session.

A token that is present but invalid is a failure, not a fall-back to the session, so a client
never runs as someone other than it asked to be.

The async functions (``auser_from_token``, ``asession_user``) serve the connect path. A
two-step validator (one with ``user_key(token)`` and ``load_user(key)``, as the default signed
tokens are) is checked in the loop without a thread hop, and the user it names comes from the
process's recent users (``hubs.auth.users``) when it was loaded less than ``USER_CACHE_TTL``
seconds ago; any other validator runs in a worker thread as before. The sync functions serve
Django views.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import aget_user
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from django.http.cookie import parse_cookie

from ..conf import conduit_settings
from ..runtime import runtime
from .user_batches import UserBatches

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

    Runs synchronously (validators may use the ORM); from async code use ``auser_from_token``.
    Raises ``InvalidToken`` when none accepts the token.
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


async def auser_from_token(token: str) -> object:
    """``user_from_token`` for the connect path: no thread hop for a two-step validator whose
    user was loaded a moment ago. Raises ``InvalidToken``."""
    ttl = float(conduit_settings.USER_CACHE_TTL)
    recent = runtime().recent_users
    for validator in conduit_settings.TOKEN_VALIDATORS:
        user_key = getattr(validator, "user_key", None)
        load_user = getattr(validator, "load_user", None)
        if user_key is not None and load_user is not None:
            key = user_key(token)
            if key is None:
                continue
            user = await recent.get((id(validator), key), ttl, _loader(validator, key, load_user))
        else:
            user = await database_sync_to_async(validator)(token)
        if user is not None:
            return user
    logger.info("Rejected an access token: no validator accepted it.")
    raise InvalidToken("Invalid or expired access token.")


def _loader(validator: Any, key: Any, load_user: Any) -> Callable[[], Awaitable[Any]]:
    """How to load the user ``key`` of a two-step ``validator``: with the loop's other loads of
    it when it can load many at once (``load_users``), else alone in a worker thread."""
    if getattr(validator, "load_users", None) is None:
        return lambda: database_sync_to_async(load_user)(key)
    batches = runtime().loop().user_batches
    found = batches.get(id(validator))
    if found is None:
        found = batches[id(validator)] = UserBatches(validator.load_users)
    return lambda: found.load(key)


def session_key_from_headers(headers: Mapping[bytes, str]) -> str | None:
    """The Django session key in a request's ``Cookie`` header (lower-case header names)."""
    cookie = headers.get(b"cookie")
    if not cookie:
        return None
    return parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) or None


class _SessionOnly:
    """What ``django.contrib.auth.aget_user`` needs of a request: its session."""

    def __init__(self, session: Any) -> None:
        self.session = session


async def asession_user(session_key: str | None) -> Any:
    """The user of a Django session (``AnonymousUser`` without one), as Django's
    ``AuthenticationMiddleware`` finds it (the session's auth hash checked); remembered for
    ``USER_CACHE_TTL`` seconds by session key."""
    if not session_key:
        return AnonymousUser()

    async def load() -> Any:
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = await aget_user(_SessionOnly(store))  # type: ignore[arg-type]
        return user if getattr(user, "is_authenticated", False) else None

    user = await runtime().recent_users.get(
        ("session", session_key), float(conduit_settings.USER_CACHE_TTL), load
    )
    return user if user is not None else AnonymousUser()
