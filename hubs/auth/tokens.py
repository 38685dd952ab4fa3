"""Signed, expiring access tokens: ``issue_token(user)`` and the default validator.

A token is ``django.core.signing`` output (URL-safe base64 plus ``:``) carrying the user's primary
key and an expiry time, signed with ``SECRET_KEY`` and the ``TOKEN_SALT`` setting.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.core.exceptions import ValidationError

from ..conf import conduit_settings


def issue_token(user: AbstractBaseUser, ttl: float | None = None, *, now: float | None = None) -> str:
    """Return a token that authenticates ``user`` for ``ttl`` seconds (default ``TOKEN_TTL``)."""
    issued = time.time() if now is None else now
    lifetime = conduit_settings.TOKEN_TTL if ttl is None else ttl
    payload = {"u": str(user.pk), "e": int(issued + lifetime)}
    return signing.dumps(payload, salt=conduit_settings.TOKEN_SALT, compress=False)


def read_token(token: str, *, now: float | None = None) -> str | None:
    """Return the user primary key a valid, unexpired token carries, else None."""
    try:
        payload: Any = signing.loads(token, salt=conduit_settings.TOKEN_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(payload, dict):
        return None
    expires, user_pk = payload.get("e"), payload.get("u")
    if not isinstance(expires, int) or not isinstance(user_pk, str):
        return None
    if (time.time() if now is None else now) >= expires:
        return None
    return user_pk


def active_user(user_pk: str) -> AbstractBaseUser | None:
    """The active user with primary key ``user_pk``, else None (uses the ORM)."""
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get(pk=user_pk)
    except (user_model.DoesNotExist, ValueError):
        return None
    return user if user.is_active else None


def active_users(user_pks: list[str]) -> dict[str, AbstractBaseUser]:
    """The active users among ``user_pks``, by the key as given (one query; keys that are no
    valid primary key are left out)."""
    user_model = get_user_model()
    field = user_model._meta.pk
    wanted: dict[Any, str] = {}
    for key in user_pks:
        try:
            wanted[field.to_python(key)] = key
        except (ValidationError, ValueError, TypeError):
            continue
    if not wanted:
        return {}
    found = user_model._default_manager.filter(pk__in=list(wanted))
    return {wanted[user.pk]: user for user in found if user.is_active and user.pk in wanted}


class SignedTokenValidator:
    """The default ``TOKEN_VALIDATORS`` entry: the active user a signed token names.

    A two-step validator (``hubs.auth.resolve``): ``user_key`` checks the signature and the
    expiry without the database, ``load_user`` finds the user (``load_users`` many at once);
    the hubs keep the users they loaded a moment ago (``USER_CACHE_TTL``). Called with a token,
    it does both steps.
    """

    def user_key(self, token: str) -> str | None:
        """The primary key a valid, unexpired token names, else None (no database)."""
        return read_token(token)

    def load_user(self, user_pk: str) -> AbstractBaseUser | None:
        """The active user ``user_pk`` (uses the ORM: runs in a worker thread)."""
        return active_user(user_pk)

    def load_users(self, user_pks: list[str]) -> dict[str, AbstractBaseUser]:
        """The active users of ``user_pks`` by key, in one query (uses the ORM: runs in a
        worker thread); a connect storm's users are loaded together (``hubs.auth.user_batches``)."""
        return active_users(user_pks)

    def __call__(self, token: str) -> AbstractBaseUser | None:
        user_pk = self.user_key(token)
        return None if user_pk is None else self.load_user(user_pk)


#: The default validator (``"hubs.auth.tokens.validate_signed_token"``).
validate_signed_token = SignedTokenValidator()
