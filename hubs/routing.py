"""Routing helpers: one mapping of URL path → hub class gives the WebSocket routes, the fast
negotiate routes and the negotiate URLs, so they can never disagree.

    HUBS = {"hubs/tasks": "conduit_rt.demo.hubs.TaskHub"}
    # asgi.py:  ProtocolTypeRouter({"http": http_application(HUBS, django_asgi_app),
    #                               "websocket": websocket_application(HUBS)})
    # urls.py:  urlpatterns += negotiate_urls(HUBS)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.routing import URLRouter
from channels.security.websocket import WebsocketDenier
from django.urls import URLPattern, URLResolver, get_resolver, path, re_path
from django.utils.module_loading import import_string

from .negotiate import NegotiateApp, NegotiateView


def _hub_class(value: str | type) -> Any:
    return import_string(value) if isinstance(value, str) else value


def _clean(prefix: str) -> str:
    return prefix.strip("/")


def websocket_urlpatterns(hubs: Mapping[str, str | type]) -> list[Any]:
    """One Channels route per hub, plus a catch-all that refuses unknown paths."""
    routes: list[Any] = [path(_clean(p), _hub_class(h).as_asgi()) for p, h in hubs.items()]
    routes.append(re_path(r"", WebsocketDenier.as_asgi()))
    return routes


def websocket_application(hubs: Mapping[str, str | type]) -> Any:
    """The ASGI app for the ``websocket`` scope: the hub routes.

    No Channels ``AuthMiddlewareStack`` is needed: a hub reads the token or the session cookie
    itself when the connection opens (``hubs.accept``), so a token client never loads a session.
    Wrapped in Channels' middleware anyway, a hub takes the ``scope["user"]`` it finds.
    """
    return URLRouter(websocket_urlpatterns(hubs))


def http_application(hubs: Mapping[str, str | type], django_application: Any) -> Any:
    """The ASGI app for the ``http`` scope: each hub's ``<path>/negotiate`` answered at once
    (``hubs.negotiate.NegotiateApp``: no middleware chain, no thread hop), everything else by
    ``django_application`` (``get_asgi_application()``)."""
    routes = {f"/{_clean(p)}/negotiate": NegotiateApp(_hub_class(h)) for p, h in hubs.items()}

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        await (app or django_application)(scope, receive, send)

    return application


def negotiate_urls(hubs: Mapping[str, str | type]) -> list[URLPattern]:
    """``<hub>/negotiate`` for each hub, exactly (no trailing slash: a POST cannot be redirected)."""
    return [
        path(f"{_clean(p)}/negotiate", NegotiateView.as_view(hub_class=_hub_class(h)))
        for p, h in hubs.items()
    ]


def routed_hub_names() -> list[str]:
    """The names of the hubs the root URLconf serves (found by their ``negotiate_urls``), so
    monitoring can report a hub before its first connection (a gauge of 0, not a missing one)."""
    names: set[str] = set()

    def walk(patterns: list[Any]) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns)
            elif getattr(pattern.callback, "view_class", None) is NegotiateView:
                names.add(pattern.callback.view_initkwargs["hub_class"].get_hub_name())

    walk(get_resolver().url_patterns)
    return sorted(names)
