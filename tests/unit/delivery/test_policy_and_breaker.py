"""Backoff with full jitter and the breaker's open → half-open → closed cycle, on injected clocks."""

from __future__ import annotations

import random

import pytest

from hubs.delivery.breaker import BreakerOpen, BreakerState, CircuitBreaker
from hubs.delivery.policy import RetryPolicy, backoff_delay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Top:
    """An RNG that always draws the top of the range: the jitter's ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_up_to_the_maximum():
    delays = [backoff_delay(n, retry_backoff=0.5, retry_backoff_max=5, retry_jitter=False) for n in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_full_jitter_draws_between_zero_and_the_ceiling():
    rng = random.Random(7)
    draws = [
        backoff_delay(3, retry_backoff=1, retry_backoff_max=60, retry_jitter=True, rng=rng)
        for _ in range(500)
    ]
    assert all(0.0 <= d <= 8.0 for d in draws)
    assert min(draws) < 1.0 and max(draws) > 7.0  # spread over the whole range, not clustered
    assert backoff_delay(3, retry_backoff=1, retry_backoff_max=60, retry_jitter=True, rng=Top()) == 8.0


def test_backoff_survives_huge_retry_counts():
    assert backoff_delay(10_000, retry_backoff=1, retry_backoff_max=30, retry_jitter=False) == 30.0
    with pytest.raises(ValueError):
        backoff_delay(-1, retry_backoff=1, retry_backoff_max=30, retry_jitter=False)


def test_policy_counts_retries_and_adds_the_ack_timeout():
    policy = RetryPolicy(
        ack_timeout=2, max_retries=3, retry_backoff=1, retry_backoff_max=10, retry_jitter=True
    )
    assert [policy.next_delay(n, rng=Top()) for n in range(4)] == [3.0, 4.0, 6.0, None]


def test_breaker_opens_after_consecutive_failures_and_half_opens_on_the_clock():
    clock = Clock()
    breaker = CircuitBreaker("layer", failure_threshold=3, reset_timeout=5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success resets the count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(BreakerOpen, match=r"next trial in 5\.0 s"):
        breaker.before_call()

    clock.now += 4.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the one trial
    with pytest.raises(BreakerOpen):
        breaker.before_call()  # no second caller while the trial runs
    breaker.record_failure()  # trial failed: open for another period
    assert breaker.state is BreakerState.OPEN
    clock.now += 5
    breaker.before_call()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()


async def test_breaker_call_counts_exceptions_and_lets_them_through():
    clock = Clock()
    breaker = CircuitBreaker("redis", failure_threshold=1, reset_timeout=1, clock=clock)

    async def boom() -> None:
        raise ConnectionError("down")

    async def fine() -> str:
        return "ok"

    with pytest.raises(ConnectionError):
        await breaker.call(boom)
    with pytest.raises(BreakerOpen):
        await breaker.call(fine)
    clock.now += 1
    assert await breaker.call(fine) == "ok"
    assert breaker.state is BreakerState.CLOSED
