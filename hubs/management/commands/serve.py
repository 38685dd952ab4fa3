"""``manage.py serve [--server daphne|uvicorn] [--host H] [--port P]``: serve the ASGI application
with tokens kept out of the access log.

daphne is the default. ``--server uvicorn`` runs uvicorn (uvloop, httptools, the websockets
sans-I/O implementation) with the same limits: see docs/operations.md, "Servers".
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hubs.logging import RedactingStream, RedactTokensFilter

SERVERS = ("daphne", "uvicorn")

# uvicorn's WebSocket implementation: websockets' sans-I/O protocol (what uvicorn's "auto" picks;
# its "websockets" implementation is the legacy one, deprecated). The official clients pass on it
# (tests/e2e/test_official_clients.py).
UVICORN_WS = "websockets-sansio"


def max_message_size() -> int:
    """Largest WebSocket message the server takes. Frames may batch several records; each
    record is then held to MAX_MESSAGE_SIZE by the hub, which answers with a clear error
    instead of a bare close."""
    from hubs.conf import conduit_settings

    return max(1024 * 1024, 2 * conduit_settings.MAX_MESSAGE_SIZE)


class Command(BaseCommand):
    help = "Serve the ASGI application with daphne (default) or uvicorn (HTTP and WebSockets)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--server", choices=SERVERS, default="daphne", help="The ASGI server (default: daphne)."
        )
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-access-log", action="store_true")
        parser.add_argument(
            "--ws-ping-interval",
            type=float,
            default=0,
            help="Seconds between WebSocket protocol pings from the server; 0 (default) sends none.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from django.conf import settings
        from django.utils.module_loading import import_string

        if options["server"] == "uvicorn":
            require_uvicorn()
        application = import_string(settings.ASGI_APPLICATION)
        self.stdout.write(f"Serving on http://{options['host']}:{options['port']}/", ending="\n")
        self.stdout.flush()
        if options["server"] == "uvicorn":
            serve_uvicorn(application, options)
        else:
            serve_daphne(application, options)


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


def serve_daphne(application: Any, options: dict[str, Any]) -> None:
    from daphne.access import AccessLogGenerator
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    Server(
        application=application,
        endpoints=build_endpoint_description_strings(host=options["host"], port=options["port"]),
        action_logger=None if options["no_access_log"] else AccessLogGenerator(RedactingStream(sys.stdout)),
        websocket_max_message_size=max_message_size(),
        websocket_max_frame_size=max_message_size(),
        websocket_handshake_timeout=5,
        application_close_timeout=10,
        # SignalR has its own keep-alive (Ping messages both ways, CLIENT_TIMEOUT). Daphne's
        # protocol-level pings are off by default: signalrcore treats ping frames as data and
        # never answers them, so daphne would drop it after ping_timeout.
        ping_interval=options["ws_ping_interval"] or math.inf,
        ping_timeout=30,
        # No cap on a connection's lifetime (daphne's default closes after 24 h).
        websocket_timeout=-1,
    ).run()


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
