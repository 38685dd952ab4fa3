"""The Celery entry points of acknowledged delivery, run in-process (the e2e tests run them on a
real worker with beat)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from hubs import tasks
from hubs.beat import beat_schedule

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fresh_stores(fresh_delivery_stores):
    """Empty embedded stores: entries other tests left in the process's memory stay out."""


def test_the_retry_task_does_nothing_unless_celery_is_the_runner():
    with override_settings(CONDUIT_RT={"RETRY_RUNNER": "embedded"}):
        assert tasks.deliver_due() == {"skipped": True}


def test_the_retry_task_runs_a_pass_on_the_process_loop_thread():
    with override_settings(CONDUIT_RT={"RETRY_RUNNER": "celery"}):
        result = tasks.deliver_due()
    assert result == {"published": 0, "resent": 0, "dead_lettered": 0, "orphaned": 0, "skipped": False}


def test_retention_task_reports_counts():
    assert tasks.apply_delivery_retention() == {"dead_letters": 0, "messages": 0}


def test_beat_schedule_names_both_tasks_with_expiring_passes():
    schedule = beat_schedule(retry_interval=0.5)
    assert schedule["conduit-deliver-due"]["task"] == "hubs.deliver_due"
    assert schedule["conduit-deliver-due"]["schedule"] == 0.5
    assert schedule["conduit-deliver-due"]["options"]["expires"] == 5.0
    assert schedule["conduit-delivery-retention"]["task"] == "hubs.apply_delivery_retention"
