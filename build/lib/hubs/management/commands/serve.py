"""``manage.py serve [--host H] [--port P]``: run daphne with tokens kept out of its access log."""

from __future__ import annotations

import math
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hubs.logging import RedactingStream


class Command(BaseCommand):
    help = "Serve the ASGI application with daphne (HTTP and WebSockets)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-access-log", action="store_true")
        parser.add_argument(
            "--ws-ping-interval",
            type=float,
            default=0,
            help="Seconds between WebSocket protocol pings from daphne; 0 (default) sends none.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from daphne.access import AccessLogGenerator
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from django.conf import settings
        from django.utils.module_loading import import_string

        from hubs.conf import conduit_settings

        application = import_string(settings.ASGI_APPLICATION)
        self.stdout.write(f"Serving on http://{options['host']}:{options['port']}/", ending="\n")
        self.stdout.flush()
        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=options["host"], port=options["port"]),
            action_logger=None
            if options["no_access_log"]
            else AccessLogGenerator(RedactingStream(sys.stdout)),
            # Frames may batch several records; each record is then held to MAX_MESSAGE_SIZE by the
            # hub, which answers with a clear error instead of a bare close.
            websocket_max_message_size=max(1024 * 1024, 2 * conduit_settings.MAX_MESSAGE_SIZE),
            websocket_max_frame_size=max(1024 * 1024, 2 * conduit_settings.MAX_MESSAGE_SIZE),
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
