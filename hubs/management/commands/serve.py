"""``manage.py serve [--server daphne|uvicorn] [--host H] [--port P]``: serve the ASGI application
with tokens kept out of the access log.

daphne is the default. ``--server uvicorn`` runs uvicorn (uvloop, httptools, the websockets
sans-I/O implementation) with the same limits: see docs/operations.md, "Servers".
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hubs.servers import GC_THRESHOLDS, parse_gc_threshold, prepare_gc

SERVERS = ("daphne", "uvicorn")


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
            "--gc-threshold",
            default=",".join(str(n) for n in GC_THRESHOLDS),
            help="The garbage collector's thresholds while serving, 'g0,g1,g2' (default: %(default)s), "
            "or 'python' for Python's own: see docs/operations.md, Servers.",
        )
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
            from hubs.servers.uvicorn import require_uvicorn

            require_uvicorn()
        try:
            thresholds = parse_gc_threshold(options["gc_threshold"])
        except ValueError as exc:
            raise CommandError(f"--gc-threshold: {exc}") from exc
        application = import_string(settings.ASGI_APPLICATION)
        prepare_gc(thresholds)
        self.stdout.write(f"Serving on http://{options['host']}:{options['port']}/", ending="\n")
        self.stdout.flush()
        if options["server"] == "uvicorn":
            from hubs.servers.uvicorn import serve_uvicorn

            serve_uvicorn(application, options)
        else:
            from hubs.servers.daphne import serve_daphne

            serve_daphne(application, options)
