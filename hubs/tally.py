"""This process's identity and its running counts of messages delivered and failed.

Delivery paths add to the tally in memory (no I/O per message). Every few seconds the presence
loop of a server (``hubs.presence``) and each retry pass of a worker send
``hubs.signals.process_report``; an observer takes the counts then (the ``monitoring`` app adds
them to its per-minute figures, for the dashboard's chart).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass
class MinuteTally:
    """Counts since the last ``take``; safe to add from any thread."""

    delivered: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_delivered(self, count: int = 1) -> None:
        # One writer per event loop and a GIL-atomic += on the hot path; the lock guards take().
        self.delivered += count

    def add_failed(self, count: int = 1) -> None:
        with self._lock:
            self.failed += count

    def take(self) -> tuple[int, int]:
        """The counts so far, reset to zero."""
        with self._lock:
            counts = (self.delivered, self.failed)
            self.delivered -= counts[0]
            self.failed -= counts[1]
            return counts


@lru_cache(maxsize=1)
def tally() -> MinuteTally:
    """The process's tally."""
    return MinuteTally()


@dataclass(frozen=True)
class ProcessIdentity:
    server_id: str
    host: str
    pid: int
    started_at: float


_identity: ProcessIdentity | None = None


def process_identity() -> ProcessIdentity:
    """``host:pid:random``: unique even when a pid is reused (a forked worker gets a new one)."""
    global _identity
    if _identity is None or _identity.pid != os.getpid():
        host = socket.gethostname()
        pid = os.getpid()
        _identity = ProcessIdentity(f"{host}:{pid}:{uuid.uuid4().hex[:6]}", host, pid, time.time())
    return _identity
