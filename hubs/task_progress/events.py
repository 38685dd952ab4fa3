"""Task events, sent to a task's group through one hub: ``TaskStarted``, ``TaskProgress``, …

    from hubs.task_progress.events import TaskEvents
    events = TaskEvents("myapp.hubs.TaskHub")      # any hub of the namespace the followers use
    events.progress(task_id, 40, message="Rendering")   # sync: views, Celery tasks, commands
    await events.acompleted(task_id, result={"url": "/v.mp4"})

Each call returns the event's ``messageId``. ``TaskStarted`` and ``TaskProgress`` go as
``ACK_EVENTS`` says (fire-and-forget by default: high-rate state, which a client that missed some
recovers with ``ResumeTask``); the terminal events are acknowledged unless the call passes
``ack=False`` (persisted, retried until every follower acked, else a dead letter).
"""

from __future__ import annotations

from typing import Any

from ..loop_thread import to_sync
from ..send import HubContext, get_hub_context
from .state import task_group


class TaskEvents:
    """The five task events of one hub's namespace. ``hub`` is a hub class or its dotted path."""

    def __init__(self, hub: str | type) -> None:
        self.hub = hub

    def get_context(self) -> HubContext:
        """The send facade of the hub (built on first use: no work at import time)."""
        return get_hub_context(self.hub)

    async def asend(
        self,
        task_id: object,
        method: str,
        payload: dict[str, Any],
        *,
        correlation_id: str | None = None,
        ack: bool | None = None,
    ) -> str:
        """Send ``method`` with ``payload`` (and the task's id) to the task's group."""
        group = self.get_context().clients.group(task_group(task_id))
        return await group.asend(
            method, {"task_id": str(task_id), **payload}, correlation_id=correlation_id, ack=ack
        )

    async def astarted(
        self,
        task_id: object,
        *,
        task_type: str | None = None,
        message: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """The task began running."""
        payload = {"task_type": task_type, "status": "running", "message": message}
        return await self.asend(task_id, "TaskStarted", payload, correlation_id=correlation_id)

    async def aprogress(
        self,
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
        payload = {"progress_percentage": int(progress_percentage), "status": status, "message": message}
        return await self.asend(task_id, "TaskProgress", payload, correlation_id=correlation_id)

    async def acompleted(
        self,
        task_id: object,
        *,
        result: Any = None,
        message: str | None = None,
        correlation_id: str | None = None,
        ack: bool = True,
    ) -> str:
        """The task finished successfully, with an optional ``result``."""
        payload = {"status": "completed", "progress_percentage": 100, "result": result, "message": message}
        return await self.asend(task_id, "TaskCompleted", payload, correlation_id=correlation_id, ack=ack)

    async def afailed(
        self,
        task_id: object,
        error: str,
        *,
        is_retryable: bool = False,
        correlation_id: str | None = None,
        ack: bool = True,
    ) -> str:
        """The task failed with ``error``."""
        payload = {"status": "failed", "error": error, "is_retryable": is_retryable}
        return await self.asend(task_id, "TaskFailed", payload, correlation_id=correlation_id, ack=ack)

    async def acancelled(
        self,
        task_id: object,
        *,
        reason: str | None = None,
        correlation_id: str | None = None,
        ack: bool = True,
    ) -> str:
        """The task was cancelled."""
        payload = {"status": "cancelled", "reason": reason}
        return await self.asend(task_id, "TaskCancelled", payload, correlation_id=correlation_id, ack=ack)

    # The synchronous forms run on the process's long-lived loop (``hubs.loop_thread``), the
    # calling thread running their database calls (an acknowledged row joins its transaction).

    def started(self, task_id: object, **kwargs: Any) -> str:
        """``astarted``, from sync code."""
        return to_sync(self.astarted)(task_id, **kwargs)

    def progress(self, task_id: object, progress_percentage: int, **kwargs: Any) -> str:
        """``aprogress``, from sync code."""
        return to_sync(self.aprogress)(task_id, progress_percentage, **kwargs)

    def completed(self, task_id: object, **kwargs: Any) -> str:
        """``acompleted``, from sync code."""
        return to_sync(self.acompleted)(task_id, **kwargs)

    def failed(self, task_id: object, error: str, **kwargs: Any) -> str:
        """``afailed``, from sync code."""
        return to_sync(self.afailed)(task_id, error, **kwargs)

    def cancelled(self, task_id: object, **kwargs: Any) -> str:
        """``acancelled``, from sync code."""
        return to_sync(self.acancelled)(task_id, **kwargs)
