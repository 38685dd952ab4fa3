"""The demo app: a simulated video-generation task that reports its progress over the task hubs.

Built on the library's task-progress recipe (``hubs.task_progress``): the ``Task`` model and the
ownership hook live here, in the project, never in the library.
"""
