"""The ASGI servers ``manage.py serve`` runs, each set up for Conduit RT's hubs:
``daphne`` (the default) and ``uvicorn``, each in its module, imported when it starts; here,
what both share."""

from __future__ import annotations

import gc

#: The garbage collector's thresholds while serving (``manage.py serve --gc-threshold``).
#: Python's (700, 10, 10) collect the youngest generation after every 700 allocations: a
#: process holding thousands of connections promotes each one's short-lived waiters (a read
#: waits 15 s between two Pings) to the oldest generation, and then walks all its objects
#: (about 180 per connection) every few tens of seconds, a second's pause at 5,000 connections.
GC_THRESHOLDS = (10_000, 10, 10)


def max_message_size() -> int:
    """Largest WebSocket message the server takes. Frames may batch several records; each
    record is then held to MAX_MESSAGE_SIZE by the hub, which answers with a clear error
    instead of a bare close."""
    from hubs.conf import conduit_settings

    return max(1024 * 1024, 2 * conduit_settings.MAX_MESSAGE_SIZE)


def parse_gc_threshold(text: str) -> tuple[int, int, int] | None:
    """``--gc-threshold``: ``"python"`` (Python's own), else three integers ``"g0,g1,g2"``."""
    if text == "python":
        return None
    values = tuple(int(part) for part in text.split(","))
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"three positive integers, or 'python' (got {text!r})")
    return values[0], values[1], values[2]


def prepare_gc(thresholds: tuple[int, int, int] | None) -> None:
    """Called by ``serve`` once the application is loaded, before the server starts: what the
    process has built so far (Django, the apps, the URL configuration) is moved out of the
    collector's sight (``gc.freeze``: it lives as long as the process), and the collector
    gets ``thresholds`` (None keeps Python's)."""
    gc.collect()
    gc.freeze()
    if thresholds is not None:
        gc.set_threshold(*thresholds)
