"""A circuit breaker around the channel layer and Redis.

Closed: calls go through; ``failure_threshold`` failures in a row open it. Open: calls are refused
at once (``BreakerOpen``) until ``reset_timeout`` has passed on the injected clock, then it is
half-open: one trial call goes through; its success closes the breaker, its failure opens it again
for another ``reset_timeout``. The state is computed from the clock on every read, never from a
cached flag, so an open breaker always half-opens on time.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOpen(Exception):
    """Raised instead of calling through an open breaker."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"Circuit breaker {name!r} is open; next trial in {retry_in:.1f} s.")
        self.retry_in = retry_in


class CircuitBreaker:
    """Counts consecutive failures of one dependency and stops calling it while it is down."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1.")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()  # senders may run in several threads (sync facade)
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_timeout:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def before_call(self) -> None:
        """Raise ``BreakerOpen`` unless a call may go through now (half-open admits one trial)."""
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return
            if state is BreakerState.HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return
            assert self._opened_at is not None
            retry_in = max(0.0, self._opened_at + self.reset_timeout - self._clock())
            raise BreakerOpen(self.name, retry_in)

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._trial_running = False
            if self._opened_at is not None:  # a failed trial: open for another period
                self._opened_at = self._clock()
                return
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._opened_at = self._clock()

    async def call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` through the breaker; its exceptions count as failures and propagate."""
        self.before_call()
        try:
            result = await func()
        except asyncio.CancelledError:
            # A cancelled call says nothing about the dependency: free the trial slot only.
            with self._lock:
                self._trial_running = False
            raise
        except Exception:
            self.record_failure()
            raise
        self.record_success()
        return result


_breakers: dict[tuple[str, int, float], CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def reset_breakers() -> None:
    """Forget every breaker (``hubs.runtime``): the next call builds them from the settings."""
    with _breakers_lock:
        _breakers.clear()


def get_breaker(name: str = "channel-layer") -> CircuitBreaker:
    """This process's breaker ``name``, built from ``BREAKER_*`` settings on first use.

    Each process judges the dependency from its own calls; the state is per process.
    """
    from ..conf import conduit_settings

    threshold = int(conduit_settings.BREAKER_FAILURE_THRESHOLD)
    reset = float(conduit_settings.BREAKER_RESET_TIMEOUT)
    key = (name, threshold, reset)
    with _breakers_lock:
        found = _breakers.get(key)
        if found is None:
            found = _breakers[key] = CircuitBreaker(name, failure_threshold=threshold, reset_timeout=reset)
        return found
