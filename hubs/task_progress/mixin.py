"""``TaskProgressMixin``: the hub methods that let a client follow tasks it may see.

    class TaskHub(TaskProgressMixin, SecureHub):
        hub_name = "tasks"
        group_namespace = "tasks"

        async def get_task_state(self, task_id):
            job = await Job.objects.filter(pk=task_id, owner_id=self.context.user_id).afirst()
            return None if job is None else TaskState(str(job.pk), job.status, job.progress)

Clients call ``SubscribeToTask(taskId)``, ``UnsubscribeFromTask(taskId)``,
``ResumeTask(taskId, lastSeq, epoch)`` and ``Ping(latencyMs)``; the events come from
``hubs.task_progress.events.TaskEvents``.
"""

from __future__ import annotations

from typing import Any

from ..errors import HubError
from ..methods import hub_method
from ..payloads import utc_timestamp
from .state import TaskState, task_group

#: What a client is told about a task it may not follow, the same as for one that does not exist
#: (so a task id reveals nothing).
TASK_NOT_FOUND = "Task not found."
#: The longest task id a client may send.
MAX_TASK_ID_LENGTH = 200
#: The largest round trip a client may report with ``Ping(latencyMs)`` (ten minutes).
MAX_REPORTED_LATENCY_MS = 600_000


class TaskProgressMixin:
    """Hub methods for following tasks; mix it into a ``Hub`` or ``SecureHub`` subclass (before
    it) and implement ``get_task_state``."""

    # What the mixin uses of the hub it is mixed into (``hubs.hub.Hub``).
    context: Any
    clients: Any
    groups: Any
    resume_group: Any

    async def get_task_state(self, task_id: str) -> TaskState | None:
        """The ownership hook. Runs on every ``SubscribeToTask`` and ``ResumeTask``, before the
        connection joins the task's group: answer the task's current state if the caller
        (``self.context.user``) may follow it, None if not (it is told "Task not found.").

        ``task_id`` is the client's string, at most ``MAX_TASK_ID_LENGTH`` characters; it may be
        anything, so parse it here. The state's ``task_id`` names the group the connection joins.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement get_task_state(task_id).")

    @hub_method
    async def subscribe_to_task(self, task_id: str) -> dict[str, Any]:
        """Join the task's group; answer its current state. A task the caller may not follow
        is "not found"."""
        state = await self._followed(task_id)
        await self.groups.add(task_group(state.task_id), {"taskId": state.task_id})
        return state.subscription()

    @hub_method
    async def resume_task(self, task_id: str, last_seq: int, epoch: str | None = None) -> dict[str, Any]:
        """Subscribe again after a reconnect and get what was missed since ``lastSeq``.

        Replays the task's group messages after ``lastSeq`` (of ``epoch``, when given) in order,
        with their original ids and seqs, and answers ``{"recovered": true, "replayed": n}``.
        When the gap is no longer in the history, answers ``{"recovered": false}`` and sends the
        task's current state instead (its latest event, carrying the stream's current seq).
        """
        state = await self._followed(task_id)
        group = task_group(state.task_id)
        replay = await self.resume_group(group, last_seq, epoch, {"taskId": state.task_id})
        position = replay.position
        answer: dict[str, Any] = {
            "taskId": state.task_id,
            "recovered": replay.recovered,
            "replayed": len(replay.entries or ()),
            "seq": position.seq if position else 0,
            "epoch": position.epoch if position else None,
        }
        if not replay.recovered:
            method, payload = state.snapshot_event()
            await self.clients.caller.asend(method, payload, position=position)
        return answer

    @hub_method
    async def unsubscribe_from_task(self, task_id: str) -> None:
        """Leave the task's group (no error when not subscribed). No ownership check: leaving
        reveals nothing."""
        await self.groups.discard(task_group(_checked_id(task_id)))

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
            self.context.ping_latency_ms = float(latency_ms)
        return {"pong": "ok", "serverTime": utc_timestamp()}

    async def _followed(self, task_id: object) -> TaskState:
        state = await self.get_task_state(_checked_id(task_id))
        if state is None:
            raise HubError(TASK_NOT_FOUND)
        return state


def _checked_id(task_id: object) -> str:
    if not isinstance(task_id, str):
        raise HubError("A task id must be a string.")
    if not task_id or len(task_id) > MAX_TASK_ID_LENGTH:
        raise HubError(TASK_NOT_FOUND)
    return task_id
