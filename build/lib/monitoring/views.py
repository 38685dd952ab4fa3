"""Views of the monitoring app: the Prometheus exposition."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import exposition


def metrics(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: every ``conduit_...`` metric (``monitoring.metrics``) plus
    django-prometheus's request and database metrics, in Prometheus' text format."""
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
