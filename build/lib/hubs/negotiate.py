"""The negotiate endpoint, ``POST <hub>/negotiate``, as the official SignalR clients call it.

csrf-exempt (the clients send no CSRF token), routed without a trailing slash, answering CORS
preflights for allowed origins. Versions 0 and 1; WebSockets with Text and Binary only.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from . import connections
from .auth.resolve import InvalidToken, user_from_request
from .security import origin_allowed

logger = logging.getLogger(__name__)

MAX_NEGOTIATE_VERSION = 1
CORS_ALLOWED_HEADERS = "authorization, x-requested-with, x-signalr-user-agent, content-type"


class NegotiateView(View):
    """Hands out a connection id (and, for version 1, a token) for one hub class."""

    hub_class: Any = None
    http_method_names = ["post", "options"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        return csrf_exempt(super().as_view(**initkwargs))

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.get_host()):
            logger.info("Negotiate refused for origin %r.", origin)
            return JsonResponse({"error": "Origin not allowed."}, status=403)
        response = super().dispatch(request, *args, **kwargs)
        if origin is not None:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Credentials"] = "true"
            response["Vary"] = "Origin"
        return response

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = HttpResponse(status=204)
        response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = CORS_ALLOWED_HEADERS
        response["Access-Control-Max-Age"] = "600"
        return response

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        raw_version = request.GET.get("negotiateVersion", "0")
        try:
            version = int(raw_version)
        except ValueError:
            return JsonResponse({"error": "The client requested a non-integer protocol version."})
        if version < 0:
            return JsonResponse(
                {
                    "error": f"The client requested version '{version}', but the server "
                    "does not support this version."
                }
            )
        version = min(version, MAX_NEGOTIATE_VERSION)

        try:
            user = user_from_request(request)
        except InvalidToken:
            return JsonResponse({"error": "Invalid or expired access token."}, status=401)
        authenticated = bool(getattr(user, "is_authenticated", False))
        if self.hub_class.require_authentication and not authenticated:
            return JsonResponse({"error": "Authentication required."}, status=401)

        user_pk = str(user.pk) if authenticated else None  # type: ignore[attr-defined]
        connection_id, token = connections.register(self.hub_class.get_hub_name(), user_pk, version=version)
        body: dict[str, Any] = {
            "negotiateVersion": version,
            "connectionId": connection_id,
            "availableTransports": [
                {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            ],
        }
        if version >= 1:
            body["connectionToken"] = token
        return JsonResponse(body)
