"""Celery tasks of the hubs app: the retry pass and retention of acknowledged delivery, and the
simulated video generation behind the demo.

``hubs.deliver_due`` and ``hubs.apply_delivery_retention`` are meant for Celery beat
(``hubs.beat.beat_schedule()``) when ``RETRY_RUNNER`` is ``"celery"``. Both are idempotent: a
pass leases what it takes, so two running at once (a slow one and the next beat) never send the
same entry twice, and a pass killed half-way leaves its leased entries to come back.

In the embedded mode Celery runs tasks eagerly; ``start_simulation`` then runs the demo task in a
worker thread of the server so the HTTP request that created it returns at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from celery import shared_task
from django.conf import settings

from . import task_events
from .conf import conduit_settings
from .loop_thread import loop_thread
from .metrics import hub_metrics
from .models import Task

logger = logging.getLogger(__name__)


def run_simulation(task_id: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Walk a task through TaskStarted, TaskProgress steps and TaskCompleted, saving each state."""
    if not Task.objects.filter(pk=task_id).exists():
        logger.warning("Simulated task %s does not exist; nothing to run.", task_id)
        return
    sleep(conduit_settings.DEMO_TASK_START_DELAY)
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        logger.warning("Simulated task %s was deleted before it started.", task_id)
        return
    Task.objects.filter(pk=task.pk).update(status=Task.Status.RUNNING, progress=0, message="Started")
    task_events.task_started(task.pk, task_type=task.task_type, message="Started")
    steps = max(1, int(conduit_settings.DEMO_TASK_STEPS))
    for step in range(1, steps + 1):
        sleep(conduit_settings.DEMO_TASK_STEP_INTERVAL)
        percent = round(step * 100 / steps)
        message = f"Rendering frame batch {step} of {steps}"
        Task.objects.filter(pk=task.pk).update(progress=percent, message=message)
        task_events.task_progress(task.pk, percent, message=message)
    result = {"videoUrl": f"/media/videos/{task.pk}.mp4", "durationSeconds": 8}
    Task.objects.filter(pk=task.pk).update(
        status=Task.Status.COMPLETED, progress=100, message="Done", result=result
    )
    task_events.task_completed(task.pk, result=result, message="Done")


@shared_task(name="hubs.deliver_due", acks_late=True, ignore_result=True)
def deliver_due() -> dict[str, Any]:
    """One retry pass (``hubs.delivery.retry.deliver_due``); beat runs it every ``RETRY_INTERVAL``.

    Does nothing unless ``RETRY_RUNNER`` is ``"celery"``: retries run in one layer only.
    """
    from dataclasses import asdict

    from .delivery.retry import deliver_due as run_pass

    if conduit_settings.RETRY_RUNNER != "celery":
        logger.warning("hubs.deliver_due ran but RETRY_RUNNER is %r: skipped.", conduit_settings.RETRY_RUNNER)
        return {"skipped": True}
    result = loop_thread().run(run_pass(), timeout=max(60.0, float(conduit_settings.ACK_TIMEOUT)))
    _flush_counts()
    if result.published or result.resent or result.dead_lettered:
        logger.info(
            "Retry pass: %d published, %d resent, %d dead-lettered.",
            result.published,
            result.resent,
            result.dead_lettered,
        )
    return asdict(result)


def _flush_counts() -> None:
    """Let observers take the dead letters this worker counted (``process_report`` without a
    server record: a server sends it from its presence loop; a worker has none)."""
    from .signals import notify, process_report

    try:
        loop_thread().run(
            notify(process_report, server=None, ttl=float(conduit_settings.PRESENCE_TTL)), timeout=10.0
        )
    except Exception:
        logger.exception("Could not report this worker's delivery counts to observers.")
        hub_metrics().errors.labels(where="monitor_report").inc()


@shared_task(name="hubs.apply_delivery_retention", acks_late=True, ignore_result=True)
def apply_delivery_retention() -> dict[str, int]:
    """Delete dead letters past ``DEAD_LETTER_RETENTION`` and acknowledged messages past
    ``MESSAGE_RETENTION``; returns (and logs) the counts."""
    from dataclasses import asdict

    from .delivery.dead_letters import apply_retention

    done = apply_retention()
    logger.info("Retention: %d dead letter(s), %d message(s) deleted.", done.dead_letters, done.messages)
    return asdict(done)


@shared_task(name="hubs.simulate_video_generation", acks_late=True)
def simulate_video_generation(task_id: str) -> None:
    """Celery entry point of ``run_simulation``."""
    run_simulation(task_id)


async def astart_simulation(task_id: str) -> None:
    """Start the simulation: on a worker through the broker, or in a thread when eager."""
    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        # thread_sensitive=False: the simulation sleeps, so it must not hold the shared sync
        # thread; its sends still run on the server's event loop through async_to_sync.
        _background(sync_to_async(run_simulation, thread_sensitive=False)(task_id))
    else:
        await sync_to_async(simulate_video_generation.delay)(task_id)


_running: set[asyncio.Task[Any]] = set()


def _background(coro: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.ensure_future(coro)
    _running.add(task)  # keep a reference until it ends

    def done(t: asyncio.Task[Any]) -> None:
        _running.discard(t)
        if not t.cancelled() and t.exception() is not None:
            logger.error("Simulated task failed.", exc_info=t.exception())

    task.add_done_callback(done)
