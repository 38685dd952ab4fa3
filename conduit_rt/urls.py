"""URLs: admin, the demo page and API, health, metrics, and negotiate for every hub."""

from __future__ import annotations

from django.contrib import admin
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from hubs.routing import negotiate_urls
from monitoring import views as monitoring_views
from monitoring.health import HealthView

from .demo import views
from .hubs import HUBS

urlpatterns = [
    path("", views.demo, name="demo"),
    path("api/tasks/", views.create_task, name="create-task"),
    path("admin/", admin.site.urls),
    path("favicon.ico", RedirectView.as_view(url=static("demo/favicon.svg"), permanent=True)),
    path("health/", HealthView.as_view(), name="health"),
    path("metrics", monitoring_views.metrics, name="metrics"),
    *negotiate_urls(HUBS),
]
