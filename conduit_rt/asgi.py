"""ASGI entry point: Django for HTTP (negotiate, API, admin, demo), the hubs for WebSockets."""

from __future__ import annotations

import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conduit_rt.settings")

# Django must be set up before anything imports models (the hub routing does).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from hubs.routing import http_application, websocket_application  # noqa: E402

from .hubs import HUBS  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Negotiates are answered before Django; the embedded server serves /static/ itself
        # (behind a proxy, let the proxy do it).
        "http": http_application(HUBS, ASGIStaticFilesHandler(django_asgi_app)),
        "websocket": websocket_application(HUBS),
    }
)
