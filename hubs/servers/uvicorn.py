"""uvicorn as ``manage.py serve --server uvicorn`` runs it: uvloop, httptools, the websockets
sans-I/O implementation, daphne's limits, tokens kept out of its log (docs/operations.md,
"Servers")."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.management.base import CommandError

from hubs.logging import RedactTokensFilter

from . import max_message_size

# uvicorn's WebSocket implementation: websockets' sans-I/O protocol (what uvicorn's "auto" picks;
# its "websockets" implementation is the legacy one, deprecated). The official clients pass on it
# (tests/e2e/test_official_clients.py).
UVICORN_WS = "websockets-sansio"


def require_uvicorn() -> None:
    """Fail with a clear message when uvicorn, uvloop or httptools is missing."""
    try:
        import httptools  # noqa: F401
        import uvicorn  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            f"--server uvicorn needs uvicorn, uvloop and httptools (pip install 'conduit-rt[uvicorn]'): {exc}"
        ) from exc


def uvicorn_config(application: Any, options: dict[str, Any]) -> Any:
    """The ``uvicorn.Config`` of ``serve --server uvicorn``: daphne's limits, uvicorn's speed."""
    import uvicorn

    return uvicorn.Config(
        application,
        host=options["host"],
        port=options["port"],
        loop="uvloop",
        http="httptools",
        ws=UVICORN_WS,
        # Channels' routers do not speak the lifespan protocol.
        lifespan="off",
        ws_max_size=max_message_size(),
        # As on daphne: no protocol-level pings unless asked for (SignalR's keep-alive does the
        # job, and signalrcore never answers a ping frame). uvicorn's default pings every 20 s.
        ws_ping_interval=options["ws_ping_interval"] or None,
        ws_ping_timeout=30,
        # Daphne negotiates no compression either; deflating every copy of a fan-out costs CPU
        # per connection for small records.
        ws_per_message_deflate=False,
        # Idle HTTP keep-alive connections close after 5 s. uvicorn caps no WebSocket's lifetime.
        timeout_keep_alive=5,
        # SIGTERM closes every WebSocket (1012, service restart) and waits this long for the
        # hubs' teardown, as daphne's application_close_timeout.
        timeout_graceful_shutdown=10,
        # Like daphne: X-Forwarded-For is not trusted unless configured behind a proxy.
        proxy_headers=False,
        # The command sets uvicorn's loggers up itself (below), leaving the project's alone.
        log_config=None,
        access_log=not options["no_access_log"],
    )


class DropWebSocketAccessLines(logging.Filter):
    """uvicorn logs each WebSocket's outcome (``"WebSocket /path?query" [accepted]``), and
    websockets its opening and closing, on ``uvicorn.error``, not on the access logger: these
    lines are dropped when the access log is off, as daphne prints none then."""

    PREFIX = '%s - "WebSocket '
    MESSAGES = frozenset({"connection open", "connection closed", "connection rejected (%d %s)"})

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        return not (isinstance(msg, str) and (msg.startswith(self.PREFIX) or msg in self.MESSAGES))


def configure_uvicorn_logging(access_log: bool) -> None:
    """uvicorn's own log format (its default log config), every line with tokens redacted: the
    access log on stdout, the rest on stderr. WebSocket lines carry the query string, with
    ``access_token`` in it from browsers, and go to ``uvicorn.error``: redacted there too."""
    from uvicorn.logging import AccessFormatter, DefaultFormatter

    redact = RedactTokensFilter()
    default = logging.StreamHandler(sys.stderr)
    default.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
    default.addFilter(redact)
    if not access_log:
        default.addFilter(DropWebSocketAccessLines())
    main = logging.getLogger("uvicorn")
    main.handlers = [default]
    main.setLevel(logging.INFO)
    main.propagate = False
    access = logging.getLogger("uvicorn.access")
    if access_log:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(
            AccessFormatter('%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s')
        )
        handler.addFilter(redact)
        access.handlers = [handler]
        access.setLevel(logging.INFO)
    else:
        access.handlers = []
    access.propagate = False


def serve_uvicorn(application: Any, options: dict[str, Any]) -> None:
    import uvicorn

    config = uvicorn_config(application, options)
    configure_uvicorn_logging(access_log=not options["no_access_log"])
    # On SIGTERM or SIGINT uvicorn stops listening, closes the WebSockets (each hub tears down
    # on its websocket.disconnect), waits for them, then re-raises the signal.
    uvicorn.Server(config).run()
