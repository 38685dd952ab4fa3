"""URLs: admin, the demo page and API, and negotiate for every hub."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from hubs.routing import negotiate_urls

from . import views
from .hubs import HUBS

urlpatterns = [
    path("", views.demo, name="demo"),
    path("api/tasks/", views.create_task, name="create-task"),
    path("admin/", admin.site.urls),
    *negotiate_urls(HUBS),
]
