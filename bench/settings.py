"""Django settings of the fan-out benchmark: the project's settings, plus what the bench needs.

- ``ASGI_APPLICATION`` points at ``bench.asgi`` (the bench hub and the plain consumers).
- The channel layer's ``capacity`` is raised (``BENCH_CAPACITY``, default 100,000) so that neither
  side measures drops: channels-redis counts capacity per *process* key (all consumers of one
  daphne share it) and bounds each consumer's local receive buffer by it, dropping the oldest
  message when full; the in-memory layer drops new messages silently once a channel queue is full.
- With ``REDIS_URL`` the layer keys get their own prefix (``bench:layer:``) so a flush between runs
  never touches anything else in that Redis database.
- Logging is quiet (WARNING) except for channels-redis' "over capacity" notices.
- Admission control is off (``CONNECT_RATE = 0``): the clients connect 64 at a time without a
  negotiate, and what is measured is delivery, not how a storm is spread out.
"""

from __future__ import annotations

import os
from typing import Any

from conduit_rt.settings import *  # noqa: F403
from conduit_rt.settings import CHANNEL_LAYERS, CONDUIT_RT, LOGGING, REDIS_URL

ASGI_APPLICATION = "bench.asgi.application"

CONDUIT_RT = {**CONDUIT_RT, "CONNECT_RATE": 0}

BENCH_CAPACITY = int(os.environ.get("BENCH_CAPACITY", "100000"))

_base_layer: dict[str, Any] = CHANNEL_LAYERS["default"]
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            **_base_layer,
            "CONFIG": {**_base_layer["CONFIG"], "capacity": BENCH_CAPACITY, "prefix": "bench:layer:"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {**_base_layer, "CONFIG": {"capacity": BENCH_CAPACITY}}}

LOGGING = {
    **LOGGING,
    "root": {**LOGGING["root"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {**LOGGING["loggers"], "channels_redis": {"level": "INFO"}},
}
