"""The filter pipeline and DiagnosticFilter on their own: composition, settings, logging, error ids."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from hubs.context import ConnectionContext
from hubs.diagnostics import DiagnosticFilter
from hubs.errors import HubError, UnexpectedError
from hubs.filters import HubFilter, HubInvocation, build_chain, get_chain, get_filters
from hubs.methods import MethodSpec

TIMEOUT = 3.0
DIAGNOSTICS = "hubs.diagnostics"
HEX12 = re.compile(r"[0-9a-f]{12}")

CALLS: list[str] = []
BUILT: list[str] = []


class Outer(HubFilter):
    def __init__(self) -> None:
        BUILT.append("Outer")

    async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
        CALLS.append("outer in")
        result = await call_next(invocation)
        CALLS.append("outer out")
        return result


class Inner(HubFilter):
    def __init__(self) -> None:
        BUILT.append("Inner")

    async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
        CALLS.append("inner in")
        result = await call_next(invocation)
        CALLS.append("inner out")
        return result


class NoInvoke:
    pass


def invocation(
    *, arguments: list[Any] | None = None, headers: dict[str, str] | None = None, streaming: bool = False
) -> HubInvocation:
    context = ConnectionContext(
        connection_id="conn-1",
        hub="echo",
        user=None,
        remote_address=None,
        user_agent=None,
        connected_at=datetime.now(UTC),
    )
    spec = MethodSpec("Echo", "echo", 1, 1, streaming, True)
    return HubInvocation(
        hub=object(),  # type: ignore[arg-type]  # the terminal below never touches it
        hub_name="echo",
        context=context,
        method="Echo",
        arguments=[1] if arguments is None else arguments,
        invocation_id="7",
        spec=spec,
        headers=headers,
        streaming=streaming,
    )


async def run(chain: Any, inv: HubInvocation) -> Any:
    return await asyncio.wait_for(chain(inv), TIMEOUT)


async def collect(stream: Any, into: list[Any]) -> list[Any]:
    """Iterate ``stream`` into ``into`` (kept when it raises), within the timeout."""

    async def drain() -> None:
        async for item in stream:
            into.append(item)

    await asyncio.wait_for(drain(), TIMEOUT)
    return into


async def test_chain_runs_filters_outermost_first_around_the_terminal():
    CALLS.clear()

    async def terminal(inv: HubInvocation) -> Any:
        CALLS.append("method")
        return inv.arguments[0]

    chain = build_chain([Outer(), Inner()], terminal)
    assert await run(chain, invocation()) == 1
    assert CALLS == ["outer in", "inner in", "method", "inner out", "outer out"]


async def test_a_filter_may_change_arguments_and_result_and_reject():
    class Doubling(HubFilter):
        async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
            invocation.arguments = [a * 2 for a in invocation.arguments]
            return {"result": await call_next(invocation)}

    class Refusing(HubFilter):
        async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
            if invocation.arguments == [0]:
                raise HubError("zero is not allowed")
            return await call_next(invocation)

    async def terminal(inv: HubInvocation) -> Any:
        return inv.arguments[0]

    chain = build_chain([Doubling(), Refusing()], terminal)
    assert await run(chain, invocation(arguments=[21])) == {"result": 42}
    with pytest.raises(HubError, match="zero is not allowed"):
        await run(chain, invocation(arguments=[0]))


def test_filters_are_built_once_per_settings_and_rebuilt_when_they_change():
    BUILT.clear()
    paths = [f"{__name__}.Outer", f"{__name__}.Inner"]
    with override_settings(CONDUIT_RT={"HUB_FILTERS": paths}):
        chain = get_chain()
        filters = get_filters()
        assert [type(f) for f in filters] == [Outer, Inner]
        assert get_chain() is chain and get_filters() is filters  # composed once, not per call
        assert BUILT == ["Outer", "Inner"]
    with override_settings(CONDUIT_RT={"HUB_FILTERS": paths[::-1]}):
        assert [type(f) for f in get_filters()] == [Inner, Outer]
        assert get_chain() is not chain
        assert BUILT == ["Outer", "Inner", "Inner", "Outer"]
    with override_settings(CONDUIT_RT={"HUB_FILTERS": []}):
        assert get_chain() is None  # the hub calls its methods directly
        assert get_filters() == ()
    assert [type(f) for f in get_filters()] == [DiagnosticFilter]  # the default


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("nowhere.Filter", r"nowhere\.Filter"),
        (f"{__name__}.NoInvoke", r"NoInvoke has no invoke"),
        (42, r"must be classes"),
    ],
)
def test_bad_filter_entries_fail_loudly(entry, message):
    with (
        override_settings(CONDUIT_RT={"HUB_FILTERS": [entry]}),
        pytest.raises(ImproperlyConfigured, match=message),
    ):
        get_chain()


def test_correlation_id_comes_from_the_client_or_is_made_once():
    assert invocation(headers={"correlationId": "order-42/a.b"}).correlation_id == "order-42/a.b"
    fresh = invocation()
    assert HEX12.fullmatch(fresh.correlation_id)
    assert fresh.correlation_id == fresh.correlation_id  # made on first read, then kept
    assert invocation().correlation_id != fresh.correlation_id
    for unusable in ("two\nlines", "x" * 200, ""):
        assert HEX12.fullmatch(invocation(headers={"correlationId": unusable}).correlation_id)


def diagnostics(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == DIAGNOSTICS]


async def test_diagnostic_filter_logs_ok_at_debug_with_duration_and_correlation(caplog):
    caplog.set_level(logging.DEBUG, logger=DIAGNOSTICS)

    async def terminal(inv: HubInvocation) -> Any:
        await asyncio.sleep(0.02)
        return "fine"

    chain = build_chain([DiagnosticFilter()], terminal)
    assert await run(chain, invocation(headers={"correlationId": "c-1"})) == "fine"
    [record] = diagnostics(caplog)
    assert record.levelno == logging.DEBUG
    assert (record.hub, record.method, record.outcome) == ("echo", "Echo", "ok")
    assert (record.connection_id, record.invocation_id, record.correlation_id) == ("conn-1", "7", "c-1")
    assert 0.015 <= record.duration < 2.0
    assert "outcome=ok" in record.getMessage() and "correlation_id=c-1" in record.getMessage()


async def test_diagnostic_filter_logs_hub_errors_at_info_and_passes_them_on(caplog):
    caplog.set_level(logging.DEBUG, logger=DIAGNOSTICS)

    async def terminal(inv: HubInvocation) -> Any:
        raise HubError("not yours")

    chain = build_chain([DiagnosticFilter()], terminal)
    with pytest.raises(HubError) as raised:
        await run(chain, invocation())
    assert type(raised.value) is HubError and raised.value.message == "not yours"
    [record] = diagnostics(caplog)
    assert (record.levelno, record.outcome, record.error_id) == (logging.INFO, "hub_error", None)
    assert "error='not yours'" in record.getMessage()


async def test_diagnostic_filter_turns_unexpected_errors_into_an_error_id(caplog):
    async def terminal(inv: HubInvocation) -> Any:
        raise KeyError("internal detail")

    chain = build_chain([DiagnosticFilter()], terminal)
    with pytest.raises(UnexpectedError) as raised:
        await run(chain, invocation())
    error = raised.value
    assert HEX12.fullmatch(error.error_id)
    assert isinstance(error.__cause__, KeyError)
    assert error.message == f"An unexpected error occurred on the server. Error id: {error.error_id}."
    [record] = diagnostics(caplog)
    assert (record.levelno, record.outcome, record.error_id) == (logging.ERROR, "error", error.error_id)
    assert record.exc_info is not None and record.exc_info[1] is error.__cause__
    assert f"error_id={error.error_id}" in record.getMessage()


async def test_diagnostic_filter_watches_a_stream_to_its_end(caplog):
    caplog.set_level(logging.DEBUG, logger=DIAGNOSTICS)

    async def items(fail: bool):
        yield 1
        await asyncio.sleep(0.02)
        yield 2
        if fail:
            raise ValueError("mid-stream")

    async def terminal(inv: HubInvocation) -> Any:
        return items(inv.arguments[0])

    chain = build_chain([DiagnosticFilter()], terminal)
    stream = await run(chain, invocation(arguments=[False], streaming=True))
    assert await collect(stream, []) == [1, 2]
    [record] = diagnostics(caplog)
    assert record.outcome == "ok" and record.duration >= 0.015  # logged at the end, not the start

    caplog.clear()
    stream = await run(chain, invocation(arguments=[True], streaming=True))
    received: list[Any] = []
    with pytest.raises(UnexpectedError) as raised:
        await collect(stream, received)
    assert received == [1, 2]
    [record] = diagnostics(caplog)
    assert (record.levelno, record.error_id) == (logging.ERROR, raised.value.error_id)
    assert isinstance(raised.value.__cause__, ValueError)


async def test_a_stream_closed_early_is_logged_as_cancelled_and_closed(caplog):
    caplog.set_level(logging.DEBUG, logger=DIAGNOSTICS)
    closed = []

    async def items():
        try:
            for i in range(100):
                yield i
        finally:
            closed.append(True)

    async def terminal(inv: HubInvocation) -> Any:
        return items()

    chain = build_chain([DiagnosticFilter()], terminal)
    stream = await run(chain, invocation(streaming=True))
    assert await asyncio.wait_for(anext(stream), TIMEOUT) == 0
    await asyncio.wait_for(stream.aclose(), TIMEOUT)
    assert closed == [True]
    [record] = diagnostics(caplog)
    assert record.outcome == "cancelled"
