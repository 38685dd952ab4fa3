"""Publish acknowledged task events from a process of its own, as a Celery task or a view would.

python publisher.py TASK_ID COUNT INTERVAL_SECONDS

Sends ``COUNT`` ``TaskProgress`` events to the task's group with ``ack=True``, one every
``INTERVAL_SECONDS``, through the facade on the process's long-lived loop thread. An acknowledged
send never fails while the database is up: when Redis is down it is persisted and spooled.
stdout: one JSON line per event (``{"event": "sent", "index": i, "id": ...}``), then
``{"event": "done", "count": COUNT, "seconds": s, "ids": [every message id, in order]}``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import django


def main() -> None:
    task_id, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conduit_rt.settings")
    django.setup()
    from hubs.loop_thread import loop_thread
    from hubs.send import get_hub_context
    from hubs.task_progress.state import task_group

    group = get_hub_context("conduit_rt.demo.hubs.TaskHub").clients.group(task_group(task_id))
    started = time.monotonic()
    ids = []
    for index in range(1, count + 1):
        payload = {
            "task_id": task_id,
            "progress_percentage": min(100, index * 100 // count),
            "status": "running",
            "message": f"event {index}",
            "index": index,
        }
        message_id = loop_thread().run(group.asend("TaskProgress", payload, ack=True), timeout=60)
        ids.append(message_id)
        print(json.dumps({"event": "sent", "index": index, "id": message_id}), flush=True)
        time.sleep(interval)
    seconds = round(time.monotonic() - started, 2)
    print(json.dumps({"event": "done", "count": count, "seconds": seconds, "ids": ids}), flush=True)


if __name__ == "__main__":
    main()
