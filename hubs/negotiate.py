"""Negotiate, ``POST <hub>/negotiate``, as the official SignalR clients call it.

One implementation (``negotiate``) behind two doors:

- ``NegotiateApp``, the ASGI application ``hubs.routing.http_application`` routes negotiates to
  before Django: no middleware chain and no thread hop (a token whose user was loaded a moment
  ago costs no database query either; ``USER_CACHE_TTL``). It checks the ``Host`` header against
  ``ALLOWED_HOSTS`` as Django would, and reads the session cookie itself for browsers.
- ``NegotiateView``, the Django view ``hubs.routing.negotiate_urls`` puts in the URLconf: it
  answers when negotiates reach Django (a project that routes HTTP to Django only), and it names
  the hubs the site serves (``routed_hub_names``).

csrf-exempt (the clients send no CSRF token), routed without a trailing slash, answering CORS
preflights for allowed origins. Versions 0 and 1; WebSockets with Text and Binary only. Over an
admission limit (``hubs.admission``) it answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from . import connections
from .admission import CAP_RETRY_AFTER
from .auth.resolve import (
    InvalidToken,
    asession_user,
    auser_from_token,
    session_key_from_headers,
    token_from_headers_and_query,
)
from .metrics import hub_metrics
from .runtime import local_admission
from .security import host_allowed, origin_allowed

logger = logging.getLogger(__name__)

MAX_NEGOTIATE_VERSION = 1
CORS_ALLOWED_HEADERS = "authorization, x-requested-with, x-signalr-user-agent, content-type"
#: The largest request body a negotiate reads (the clients send none).
MAX_BODY = 64 * 1024


@dataclass(slots=True)
class Answer:
    """A negotiate's response: status, JSON body (None: no body), extra headers."""

    status: int
    body: dict[str, Any] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def _error(status: int, error: str) -> Answer:
    return Answer(status, {"error": error})


def _retry_later(error: str, retry_after: int) -> Answer:
    """503 with ``Retry-After``, and the seconds in the body too (the official clients put the
    body, not the headers, in their error message)."""
    return Answer(503, {"error": error, "retryAfter": retry_after}, [("Retry-After", str(retry_after))])


async def negotiate(
    hub_class: Any,
    *,
    method: str,
    headers: Mapping[bytes, str],
    query_string: bytes,
    session_user: Callable[[], Awaitable[Any]],
) -> Answer:
    """Answer one negotiate request for ``hub_class``. ``headers`` maps lower-case names to
    values; ``session_user()`` finds the session's user when no token is sent."""
    origin = headers.get(b"origin")
    if not origin_allowed(origin, headers.get(b"host")):
        logger.info("Negotiate refused for origin %r.", origin)
        answer = _error(403, "Origin not allowed.")
    elif method == "OPTIONS":
        answer = Answer(
            204,
            headers=[
                ("Access-Control-Allow-Methods", "POST, OPTIONS"),
                ("Access-Control-Allow-Headers", CORS_ALLOWED_HEADERS),
                ("Access-Control-Max-Age", "600"),
            ],
        )
    elif method != "POST":
        answer = Answer(405, headers=[("Allow", "POST, OPTIONS")])
    else:
        answer = await _post(hub_class, headers, query_string, session_user)
    if origin is not None and answer.status != 403:
        answer.headers += [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]
    return answer


async def _post(
    hub_class: Any,
    headers: Mapping[bytes, str],
    query_string: bytes,
    session_user: Callable[[], Awaitable[Any]],
) -> Answer:
    raw_version = (parse_qs(query_string.decode("latin1")).get("negotiateVersion") or ["0"])[0]
    try:
        version = int(raw_version)
    except ValueError:
        return Answer(200, {"error": "The client requested a non-integer protocol version."})
    if version < 0:
        return Answer(
            200,
            {
                "error": f"The client requested version '{version}', "
                "but the server does not support this version."
            },
        )
    version = min(version, MAX_NEGOTIATE_VERSION)

    token = token_from_headers_and_query(
        [(b"authorization", headers.get(b"authorization", "").encode("latin1"))], query_string
    )
    try:
        user = await auser_from_token(token) if token is not None else await session_user()
    except InvalidToken:
        return _error(401, "Invalid or expired access token.")
    except Exception:  # noqa: BLE001 - logged and counted by _unavailable: the database is down
        return _unavailable(hub_class)
    authenticated = bool(getattr(user, "is_authenticated", False))
    if hub_class.require_authentication and not authenticated:
        return _error(401, "Authentication required.")

    user_pk = str(user.pk) if authenticated else None
    try:
        return await _admit_and_register(hub_class, user_pk, version)
    except Exception:  # noqa: BLE001 - logged and counted by _unavailable: a store is down
        return _unavailable(hub_class)


def _unavailable(hub_class: Any) -> Answer:
    """What a negotiate that failed on a store or the database answers (inside ``except``): a
    clear, retryable 503, the error logged and counted."""
    logger.exception("Negotiate for %s failed.", hub_class.get_hub_name())
    hub_metrics().errors.labels(where="negotiate").inc()
    return _retry_later("The server cannot take connections right now.", CAP_RETRY_AFTER)


async def _admit_and_register(hub_class: Any, user_pk: str | None, version: int) -> Answer:
    refusal = await local_admission().admit(
        hub=hub_class.get_hub_name(),
        namespace=hub_class.get_group_namespace(),
        user_id=user_pk,
        door="negotiate",
        new=True,
    )
    if refusal is not None:
        return _retry_later(refusal.error, refusal.retry_after)
    connection_id, connection_token = await connections.aregister(
        hub_class.get_hub_name(), user_pk, version=version
    )
    body: dict[str, Any] = {
        "negotiateVersion": version,
        "connectionId": connection_id,
        "availableTransports": [
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
        ],
    }
    if version >= 1:
        body["connectionToken"] = connection_token
    return Answer(200, body)


class NegotiateApp:
    """The ASGI application answering negotiates of ``hub_class`` (``http`` scope)."""

    def __init__(self, hub_class: Any) -> None:
        self.hub_class = hub_class

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {name.lower(): value.decode("latin1") for name, value in scope.get("headers") or []}
        if not await _read_body(receive):
            answer = _error(413, "Request body too large.")
        elif not host_allowed(headers.get(b"host")):
            logger.info("Negotiate refused for host %r.", headers.get(b"host"))
            answer = _error(400, "Invalid Host header.")
        else:
            answer = await negotiate(
                self.hub_class,
                method=scope.get("method", "GET"),
                headers=headers,
                query_string=scope.get("query_string") or b"",
                session_user=lambda: asession_user(session_key_from_headers(headers)),
            )
        body = b"" if answer.body is None else orjson.dumps(answer.body)
        response_headers = [(b"content-length", str(len(body)).encode())]
        if answer.body is not None:
            response_headers.append((b"content-type", b"application/json"))
        response_headers += [(k.lower().encode("latin1"), v.encode("latin1")) for k, v in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bool:
    """Consume the request body; False when it is larger than ``MAX_BODY``."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return True
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            return False
        if not message.get("more_body"):
            return True


class NegotiateView:
    """The Django view of negotiate for ``hub_class`` (``as_view`` is what the URLconf holds)."""

    def __init__(self, hub_class: Any) -> None:
        self.hub_class = hub_class

    @classmethod
    def as_view(cls, *, hub_class: Any) -> Any:
        view = cls(hub_class)

        async def negotiate_view(request: HttpRequest) -> HttpResponse:
            return await view.handle(request)

        negotiate_view.view_class = cls  # type: ignore[attr-defined]
        negotiate_view.view_initkwargs = {"hub_class": hub_class}  # type: ignore[attr-defined]
        return csrf_exempt(negotiate_view)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        request.get_host()  # ALLOWED_HOSTS: Django answers 400 for another host
        headers = {
            name.lower().replace("_", "-").encode("latin1"): value for name, value in request.headers.items()
        }

        async def session_user() -> Any:
            auser = getattr(request, "auser", None)
            if auser is not None:  # Django's AuthenticationMiddleware
                return await auser()
            return await asession_user(session_key_from_headers(headers))

        answer = await negotiate(
            self.hub_class,
            method=request.method or "GET",
            headers=headers,
            query_string=request.META.get("QUERY_STRING", "").encode("latin1"),
            session_user=session_user,
        )
        response = HttpResponse(
            b"" if answer.body is None else orjson.dumps(answer.body),
            status=answer.status,
            content_type="application/json",
        )
        for name, value in answer.headers:
            response[name] = value
        return response
