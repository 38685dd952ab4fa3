"""The demo's model: the tasks whose progress the task hubs publish."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from hubs.task_progress.state import TaskState, task_group


class Task(models.Model):
    """A unit of background work owned by a user; its events go to the group ``task-<id>``.

    Its table keeps the name it had when the model lived in the ``hubs`` app (``hubs_task``), so
    a database made then keeps its tasks (``migrations/0001_initial.py``).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conduit_tasks"
    )
    task_type = models.CharField(max_length=64, default="video-generation")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "hubs_task"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="hubs_task_owner_i_4b788c_idx")]

    def __str__(self) -> str:
        return f"{self.task_type} {self.id} ({self.status}, {self.progress}%)"

    @property
    def group_name(self) -> str:
        return task_group(self.id)

    def state(self) -> TaskState:
        """Where the task stands, for the task hubs (``TaskProgressMixin.get_task_state``)."""
        return TaskState(
            task_id=str(self.id),
            status=self.status,
            progress_percentage=self.progress,
            message=self.message or None,
            task_type=self.task_type,
            result=self.result,
            error=self.error or None,
        )
