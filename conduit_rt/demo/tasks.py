"""The demo's work: a simulated video generation that reports its progress as task events.

On a Celery worker when there is a broker (``demo.simulate_video_generation``); in the embedded
mode Celery runs tasks eagerly, so ``astart_simulation`` runs it in a worker thread of the server
instead, and the HTTP request that created the task returns at once.
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
from .conf import demo_setting
from .models import Task

logger = logging.getLogger(__name__)


def run_simulation(task_id: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Walk a task through TaskStarted, TaskProgress steps and TaskCompleted, saving each state."""
    if not Task.objects.filter(pk=task_id).exists():
        logger.warning("Simulated task %s does not exist; nothing to run.", task_id)
        return
    sleep(demo_setting("TASK_START_DELAY"))
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        logger.warning("Simulated task %s was deleted before it started.", task_id)
        return
    Task.objects.filter(pk=task.pk).update(status=Task.Status.RUNNING, progress=0, message="Started")
    task_events.task_started(task.pk, task_type=task.task_type, message="Started")
    steps = max(1, int(demo_setting("TASK_STEPS")))
    for step in range(1, steps + 1):
        sleep(demo_setting("TASK_STEP_INTERVAL"))
        percent = round(step * 100 / steps)
        message = f"Rendering frame batch {step} of {steps}"
        Task.objects.filter(pk=task.pk).update(progress=percent, message=message)
        task_events.task_progress(task.pk, percent, message=message)
    result = {"videoUrl": f"/media/videos/{task.pk}.mp4", "durationSeconds": 8}
    Task.objects.filter(pk=task.pk).update(
        status=Task.Status.COMPLETED, progress=100, message="Done", result=result
    )
    task_events.task_completed(task.pk, result=result, message="Done")




@shared_task(name="demo.simulate_video_generation", acks_late=True)
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
