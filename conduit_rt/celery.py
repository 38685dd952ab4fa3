"""The Celery app ``conduit_rt``: configured from Django settings under the ``CELERY_`` prefix."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conduit_rt.settings")

app = Celery("conduit_rt")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
