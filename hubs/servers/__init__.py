"""The ASGI servers ``manage.py serve`` runs, each set up for Conduit RT's hubs:
``daphne`` (the default) and ``uvicorn``. Nothing here is imported until a server starts."""

from __future__ import annotations


def max_message_size() -> int:
    """Largest WebSocket message the server takes. Frames may batch several records; each
    record is then held to MAX_MESSAGE_SIZE by the hub, which answers with a clear error
    instead of a bare close."""
    from hubs.conf import conduit_settings

    return max(1024 * 1024, 2 * conduit_settings.MAX_MESSAGE_SIZE)
