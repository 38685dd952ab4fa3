"""The task-progress recipe: long-running work (a Celery task, a thread) reports its progress to
the browsers that follow it. Optional, and it creates no tables.

- ``TaskEvents(hub)``: send ``TaskStarted``, ``TaskProgress``, ``TaskCompleted``, ``TaskFailed``
  and ``TaskCancelled`` to a task's group, from sync or async code (``hubs.task_progress.events``);
- ``TaskProgressMixin``: the hub methods ``SubscribeToTask``, ``UnsubscribeFromTask``,
  ``ResumeTask`` and ``Ping``, with one hook the host implements, ``get_task_state``: who may
  follow which task, and where it stands (``hubs.task_progress.mixin``);
- ``TaskState``: where a task stands, as the hook answers it (``hubs.task_progress.state``).

See ``docs/tasks.md``.
"""
