"""The checks before a WebSocket is accepted: origin, credentials, and the negotiated connection.

``open_connection`` runs on ``websocket.connect`` and answers the ``ConnectionContext`` of the
connection, or raises ``HubDenied`` (the client sees HTTP 403) or ``ServerBusy`` (admission
control, ``hubs.admission``: the hub answers the handshake, then closes with the error and
``allowReconnect``). The hub's own ``authorize`` hook runs after it.

The user is the token's when one is sent, else the Django session's: the session cookie is read
here (no Channels ``AuthMiddlewareStack`` is needed, and a token client never loads a session);
a user an outer Channels middleware put in ``scope["user"]`` is taken as it is. Either way
``scope["user"]`` holds the connection's user afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from . import connections
from .auth.resolve import (
    InvalidToken,
    asession_user,
    auser_from_token,
    session_key_from_headers,
    token_from_headers_and_query,
)
from .context import ConnectionContext
from .errors import HubDenied, ServerBusy
from .runtime import local_admission
from .security import origin_allowed


async def open_connection(
    scope: dict[str, Any], hub_name: str, *, namespace: str, require_authentication: bool
) -> ConnectionContext:
    """Check the request of a WebSocket to hub ``hub_name`` (groups in ``namespace``); its
    context, or ``HubDenied``, or ``ServerBusy``."""
    headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
    header = {k.lower(): v.decode("latin1") for k, v in headers}
    if not origin_allowed(header.get(b"origin"), header.get(b"host")):
        raise HubDenied("Origin not allowed.")

    query_string: bytes = scope.get("query_string") or b""
    token = token_from_headers_and_query(headers, query_string)
    if token is not None:
        try:
            user = await auser_from_token(token)
        except InvalidToken as exc:
            raise HubDenied("Invalid or expired access token.") from exc
    elif scope.get("user") is not None:
        user = scope["user"]
    else:
        user = await asession_user(session_key_from_headers(header))
    scope["user"] = user
    authenticated = bool(getattr(user, "is_authenticated", False))
    if require_authentication and not authenticated:
        raise HubDenied("Authentication required.")
    user_pk = str(user.pk) if authenticated else None

    ids = parse_qs(query_string.decode("latin1")).get("id")
    if ids:
        negotiated = await connections.aclaim(ids[0])
        if negotiated is None or negotiated.hub != hub_name:
            raise HubDenied("No connection with that ID.")
        if negotiated.user_pk != user_pk:
            raise HubDenied("The connection was negotiated for another user.")
        connection_id = negotiated.connection_id
    else:  # skipNegotiation: the client connects straight to the hub URL.
        connection_id = connections.new_connection_id()
    refusal = await local_admission().admit(
        hub=hub_name,
        namespace=namespace,
        user_id=user_pk,
        door="websocket",
        new=not ids,  # a negotiated connection was admitted at negotiate
    )
    if refusal is not None:
        raise ServerBusy(refusal.error, refusal.retry_after)

    client = scope.get("client")
    now = datetime.now(UTC)
    return ConnectionContext(
        connection_id=connection_id,
        hub=hub_name,
        user=user,
        remote_address=client[0] if client else None,
        user_agent=header.get(b"x-signalr-user-agent") or header.get(b"user-agent"),
        connected_at=now,
        last_activity=now.timestamp(),
    )
