"""The demo's task hubs, on the library's recipe: ``TaskHub`` (``/hubs/tasks``) and
``VideoGenerationHub`` (``/hubs/video-generation``).

Clients subscribe to the tasks they own and receive ``TaskStarted``, ``TaskProgress``,
``TaskCompleted``, ``TaskFailed`` and ``TaskCancelled`` (``conduit_rt.demo.task_events``). Both
hubs share one group namespace, so a task event reaches subscribers of either hub with one send.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from channels.db import database_sync_to_async

from hubs.hub import SecureHub
from hubs.task_progress.mixin import TaskProgressMixin
from hubs.task_progress.state import TaskState

from .models import Task


class TaskHubBase(TaskProgressMixin, SecureHub):
    """Follow the caller's own tasks."""

    group_namespace = "tasks"
    #: Restrict subscriptions to these task types (None: any type).
    task_types: ClassVar[tuple[str, ...] | None] = None

    async def get_task_state(self, task_id: str) -> TaskState | None:
        """The caller's task ``task_id`` (a UUID), else None: someone else's task is "not found"."""
        try:
            pk = uuid.UUID(task_id)
        except ValueError:
            return None
        user_id = self.context.user_id if self.context else None
        if user_id is None:
            return None
        # database_sync_to_async, not the async ORM: it closes stale connections around the call.
        task = await database_sync_to_async(self._find_task)(pk, user_id)
        return None if task is None else task.state()

    def _find_task(self, pk: uuid.UUID, user_id: str) -> Task | None:
        tasks = Task.objects.filter(pk=pk, owner_id=user_id)
        if self.task_types is not None:
            tasks = tasks.filter(task_type__in=self.task_types)
        return tasks.first()


class TaskHub(TaskHubBase):
    """Progress of any of the caller's tasks, at ``/hubs/tasks``."""

    hub_name = "tasks"


class VideoGenerationHub(TaskHubBase):
    """Progress of the caller's video-generation tasks, at ``/hubs/video-generation``."""

    hub_name = "video-generation"
    task_types = ("video-generation",)
