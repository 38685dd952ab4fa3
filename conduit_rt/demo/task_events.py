"""The demo's task events, sent through its ``TaskHub`` (``hubs.task_progress.events``).

Each function returns the event's ``messageId``; the ``a``-prefixed twins are the async forms.
"""

from __future__ import annotations

from hubs.task_progress.events import TaskEvents

#: The hub the events go through (its namespace reaches followers on both task hubs).
TASK_HUB = "conduit_rt.demo.hubs.TaskHub"

events = TaskEvents(TASK_HUB)

atask_started = events.astarted
atask_progress = events.aprogress
atask_completed = events.acompleted
atask_failed = events.afailed
atask_cancelled = events.acancelled
task_started = events.started
task_progress = events.progress
task_completed = events.completed
task_failed = events.failed
task_cancelled = events.cancelled
