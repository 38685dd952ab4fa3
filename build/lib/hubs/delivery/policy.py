"""Retry policy in Celery's vocabulary, with exponential backoff and full jitter as a pure function.

``max_retries``, ``retry_backoff``, ``retry_backoff_max`` and ``retry_jitter`` mean what they mean
on a Celery task (``celery.app.task.Task``). Celery's own ``get_exponential_backoff_interval``
works in whole seconds; acknowledgement deadlines need fractions, so this is the same formula in
floats, with the random source injected for tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


class Uniform(Protocol):
    """A source of uniform floats in [a, b] (``random.Random.uniform``)."""

    def uniform(self, a: float, b: float) -> float: ...


def backoff_delay(
    retries: int,
    *,
    retry_backoff: float,
    retry_backoff_max: float,
    retry_jitter: bool,
    rng: Uniform | None = None,
) -> float:
    """Seconds to wait before retry number ``retries + 1`` (``retries`` counts retries so far).

    ``min(retry_backoff_max, retry_backoff * 2 ** retries)``, then with full jitter a uniform draw
    between 0 and that value (AWS's "full jitter"), as Celery does.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}.")
    ceiling = min(float(retry_backoff_max), float(retry_backoff) * (2.0 ** min(retries, 62)))
    if not retry_jitter:
        return max(0.0, ceiling)
    return max(0.0, (rng or random).uniform(0.0, ceiling))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When an unacknowledged message is sent again, and when it becomes a dead letter."""

    ack_timeout: float
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    retry_jitter: bool

    def next_delay(self, retries: int, rng: Uniform | None = None) -> float | None:
        """Seconds until the next attempt after ``retries`` retries, or None when none is left.

        Every attempt also waits ``ack_timeout`` for the client's ack; the backoff comes on top.
        """
        if retries >= self.max_retries:
            return None
        return self.ack_timeout + backoff_delay(
            retries,
            retry_backoff=self.retry_backoff,
            retry_backoff_max=self.retry_backoff_max,
            retry_jitter=self.retry_jitter,
            rng=rng,
        )
