"""The hubs this project serves, by URL path (negotiate is routed at ``<path>/negotiate``)."""

from __future__ import annotations

HUBS: dict[str, str] = {
    "hubs/tasks": "conduit_rt.demo.hubs.TaskHub",
    "hubs/video-generation": "conduit_rt.demo.hubs.VideoGenerationHub",
}
