"""The task hubs: ``TaskHub`` (``/hubs/tasks``) and ``VideoGenerationHub`` (``/hubs/video-generation``).

Clients subscribe to the tasks they own and receive ``TaskStarted``, ``TaskProgress``,
``TaskCompleted``, ``TaskFailed`` and ``TaskCancelled`` (see ``hubs.task_events``). Both hubs
share one group namespace, so a task event reaches subscribers of either hub with one send.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from channels.db import database_sync_to_async

from .errors import HubError
from .hub import SecureHub
from .methods import hub_method
from .models import Task, task_group
from .payloads import utc_timestamp
from .task_events import task_snapshot

TASK_NOT_FOUND = "Task not found."


#: The largest round trip a client may report with ``Ping(latencyMs)`` (ten minutes).
MAX_REPORTED_LATENCY_MS = 600_000


class TaskHubBase(SecureHub):
    """Subscribe/unsubscribe to owned tasks, and Ping."""

    group_namespace = "tasks"
    #: Restrict subscriptions to these task types (None: any type).
    task_types: ClassVar[tuple[str, ...] | None] = None

    @hub_method
    async def subscribe_to_task(self, task_id: str) -> dict[str, Any]:
        """Join the task's group; answer its current state. Someone else's task is "not found"."""
        task = await self._owned_task(task_id)
        await self.add_to_group_with_metadata(task_group(task.id), {"taskId": str(task.id)})
        return {
            "taskId": str(task.id),
            "taskType": task.task_type,
            "status": task.status,
            "progressPercentage": task.progress,
            "message": task.message or None,
        }

    @hub_method
    async def resume_task(self, task_id: str, last_seq: int, epoch: str | None = None) -> dict[str, Any]:
        """Subscribe again after a reconnect and get what was missed since ``lastSeq``.

        Replays the task's group messages after ``lastSeq`` (of ``epoch``, when given) in order,
        with their original ids and seqs, and answers ``{"recovered": true, "replayed": n}``.
        When the gap is no longer in the history, answers ``{"recovered": false}`` and sends the
        task's current state instead (its latest event, carrying the stream's current seq).
        """
        task = await self._owned_task(task_id)
        group = task_group(task.id)
        replay = await self.resume_group(group, last_seq, epoch, {"taskId": str(task.id)})
        position = replay.position
        answer: dict[str, Any] = {
            "taskId": str(task.id),
            "recovered": replay.recovered,
            "replayed": len(replay.entries or ()),
            "seq": position.seq if position else 0,
            "epoch": position.epoch if position else None,
        }
        if not replay.recovered:
            method, payload = task_snapshot(task)
            await self.clients.caller.asend(method, payload, position=position)
        return answer

    @hub_method
    async def unsubscribe_from_task(self, task_id: str) -> None:
        """Leave the task's group (no error when not subscribed)."""
        await self.groups.discard(task_group(self._parse_id(task_id)))

    @hub_method
    async def ping(self, latency_ms: object = None) -> dict[str, str]:
        """Answer at once; clients time the round trip to judge the connection's quality.

        A client may pass the round trip it measured for its previous ping, in milliseconds
        (``Ping(latencyMs)``, as the JS helper does): the connection monitor shows it.
        """
        if latency_ms is not None:
            if (
                isinstance(latency_ms, bool)
                or not isinstance(latency_ms, int | float)
                or not 0 <= latency_ms <= MAX_REPORTED_LATENCY_MS
            ):
                raise HubError(f"latencyMs must be a number from 0 to {MAX_REPORTED_LATENCY_MS}.")
            assert self.context is not None
            self.context.ping_latency_ms = float(latency_ms)
        return {"pong": "ok", "serverTime": utc_timestamp()}

    @staticmethod
    def _parse_id(task_id: object) -> uuid.UUID:
        if not isinstance(task_id, str):
            raise HubError("A task id must be a string.")
        try:
            return uuid.UUID(task_id)
        except ValueError as exc:
            raise HubError(TASK_NOT_FOUND) from exc

    async def _owned_task(self, task_id: object) -> Task:
        pk = self._parse_id(task_id)
        user_id = self.context.user_id if self.context else None
        task = await database_sync_to_async(self._find_task)(pk, user_id)
        if task is None:
            raise HubError(TASK_NOT_FOUND)
        return task

    def _find_task(self, pk: uuid.UUID, user_id: str | None) -> Task | None:
        if user_id is None:
            return None
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
