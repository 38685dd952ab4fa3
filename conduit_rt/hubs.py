"""The hubs this project serves, by URL path (negotiate is routed at ``<path>/negotiate``)."""

from __future__ import annotations

HUBS: dict[str, str] = {
    "hubs/tasks": "hubs.task_hubs.TaskHub",
    "hubs/video-generation": "hubs.task_hubs.VideoGenerationHub",
}
