"""``Admission``: the connect rate's token bucket on an injected clock, the caps, the retry delay."""

from __future__ import annotations

from django.test import override_settings

from hubs.admission import CAP_RETRY_AFTER, MAX_RETRY_AFTER, Admission
from tests.support.clock import Clock


def test_the_rate_takes_a_burst_then_one_attempt_per_interval():
    clock = Clock(100.0)
    admission = Admission(clock)
    with override_settings(CONDUIT_RT={"CONNECT_RATE": 10, "CONNECT_BURST": 3}):
        assert [admission.take_attempt() for _ in range(3)] == [None] * 3
        refusal = admission.take_attempt()
        assert refusal is not None and refusal.reason == "rate" and refusal.retry_after == 1
        clock.now += 0.1  # one token back at 10 per second
        assert admission.take_attempt() is None
        assert admission.take_attempt() is not None
        clock.now += 10  # the bucket refills up to the burst, no more
        assert [admission.take_attempt() for _ in range(4)].count(None) == 3


def test_the_retry_delay_grows_with_the_crowd_turned_away_this_second():
    clock = Clock(100.0)
    admission = Admission(clock)
    with override_settings(CONDUIT_RT={"CONNECT_RATE": 10, "CONNECT_BURST": 1}):
        admission.take_attempt()
        delays = [admission.take_attempt().retry_after for _ in range(35)]
        assert (delays[0], delays[9], delays[10], delays[-1]) == (1, 1, 2, 4)  # ceil(refused / rate)
        clock.now += 1.0  # a new second: the count starts again (one token came back too)
        assert admission.take_attempt() is None
        assert admission.take_attempt().retry_after == 1
        for _ in range(2000):
            last = admission.take_attempt()
        assert last.retry_after == MAX_RETRY_AFTER


def test_zero_turns_each_limit_off():
    admission = Admission(Clock(100.0))
    with override_settings(CONDUIT_RT={"CONNECT_RATE": 0, "MAX_CONNECTIONS": 0}):
        assert all(admission.take_attempt() is None for _ in range(1000))
        assert admission.connections_refusal(10**6) is None
    with override_settings(CONDUIT_RT={"MAX_CONNECTIONS": 2}):
        assert admission.connections_refusal(1) is None
        refusal = admission.connections_refusal(2)
        assert refusal.reason == "connections" and refusal.retry_after == CAP_RETRY_AFTER
