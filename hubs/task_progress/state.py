"""Where a task stands, as the host's ownership hook reports it, and the event that states it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The task's statuses that end it: their events are acknowledged (``docs/delivery.md``).
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def task_group(task_id: object) -> str:
    """The hub group that receives a task's events."""
    return f"task-{task_id}"


@dataclass(frozen=True, slots=True)
class TaskState:
    """One task's current state (``TaskProgressMixin.get_task_state`` answers it).

    ``status`` is one of ``pending``, ``running``, ``completed``, ``failed``, ``cancelled``
    (a host may use others: they are sent as progress). ``message`` is the latest progress text;
    ``result`` the outcome of a completed task; ``error`` why it failed.
    """

    task_id: str
    status: str = "pending"
    progress_percentage: int = 0
    message: str | None = None
    task_type: str | None = None
    result: Any = None
    error: str | None = None

    def subscription(self) -> dict[str, Any]:
        """What ``SubscribeToTask`` answers."""
        return {
            "taskId": self.task_id,
            "taskType": self.task_type,
            "status": self.status,
            "progressPercentage": self.progress_percentage,
            "message": self.message or None,
        }

    def snapshot_event(self) -> tuple[str, dict[str, Any]]:
        """The event that states where the task stands now (sent when a resume cannot replay
        the gap): its terminal event once it ended, else a ``TaskProgress``."""
        base: dict[str, Any] = {"task_id": self.task_id, "status": self.status}
        base["message"] = self.message or None
        if self.status == "completed":
            return "TaskCompleted", {**base, "progress_percentage": 100, "result": self.result}
        if self.status == "failed":
            error = self.error or self.message or "failed"
            return "TaskFailed", {**base, "error": error, "is_retryable": False}
        if self.status == "cancelled":
            return "TaskCancelled", {**base, "reason": self.message or None}
        return "TaskProgress", {**base, "progress_percentage": self.progress_percentage}
