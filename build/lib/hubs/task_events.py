"""Task events, sent to the task's group on the task hubs: TaskStarted, TaskProgress, …

Each function returns the event's ``messageId``; the ``a``-prefixed twins are the async forms.
"""

from __future__ import annotations

from typing import Any

from .loop_thread import to_sync
from .models import Task, task_group
from .send import get_hub_context

TASK_HUB = "hubs.task_hubs.TaskHub"


async def _asend(task_id: object, method: str, payload: dict[str, Any], correlation_id: str | None) -> str:
    clients = get_hub_context(TASK_HUB).clients
    return await clients.group(task_group(task_id)).asend(
        method, {"task_id": str(task_id), **payload}, correlation_id=correlation_id
    )


async def atask_started(
    task_id: object,
    *,
    task_type: str | None = None,
    message: str | None = None,
    correlation_id: str | None = None,
) -> str:
    """The task began running."""
    payload = {"task_type": task_type, "status": "running", "message": message}
    return await _asend(task_id, "TaskStarted", payload, correlation_id)


async def atask_progress(
    task_id: object,
    progress_percentage: int,
    *,
    status: str = "running",
    message: str | None = None,
    correlation_id: str | None = None,
) -> str:
    """The task made progress: ``progressPercentage`` 0-100, ``status``, ``message``."""
    if not 0 <= int(progress_percentage) <= 100:
        raise ValueError(f"progress_percentage must be within 0..100, got {progress_percentage!r}.")
    payload = {
        "progress_percentage": int(progress_percentage),
        "status": status,
        "message": message,
    }
    return await _asend(task_id, "TaskProgress", payload, correlation_id)


async def atask_completed(
    task_id: object,
    *,
    result: Any = None,
    message: str | None = None,
    correlation_id: str | None = None,
) -> str:
    """The task finished successfully, with an optional ``result``."""
    payload = {
        "status": "completed",
        "progress_percentage": 100,
        "result": result,
        "message": message,
    }
    return await _asend(task_id, "TaskCompleted", payload, correlation_id)


async def atask_failed(
    task_id: object,
    error: str,
    *,
    is_retryable: bool = False,
    correlation_id: str | None = None,
) -> str:
    """The task failed with ``error``."""
    payload = {"status": "failed", "error": error, "is_retryable": is_retryable}
    return await _asend(task_id, "TaskFailed", payload, correlation_id)


async def atask_cancelled(
    task_id: object, *, reason: str | None = None, correlation_id: str | None = None
) -> str:
    """The task was cancelled."""
    return await _asend(task_id, "TaskCancelled", {"status": "cancelled", "reason": reason}, correlation_id)


def task_snapshot(task: Task) -> tuple[str, dict[str, Any]]:
    """The event that states where ``task`` stands now (sent when a resume cannot replay a gap)."""
    base: dict[str, Any] = {"task_id": str(task.id), "status": task.status, "message": task.message or None}
    if task.status == Task.Status.COMPLETED:
        return "TaskCompleted", {**base, "progress_percentage": 100, "result": task.result}
    if task.status == Task.Status.FAILED:
        return "TaskFailed", {**base, "error": task.error or task.message or "failed", "is_retryable": False}
    if task.status == Task.Status.CANCELLED:
        return "TaskCancelled", {**base, "reason": task.message or None}
    return "TaskProgress", {**base, "progress_percentage": task.progress}


task_started = to_sync(atask_started)
task_progress = to_sync(atask_progress)
task_completed = to_sync(atask_completed)
task_failed = to_sync(atask_failed)
task_cancelled = to_sync(atask_cancelled)
