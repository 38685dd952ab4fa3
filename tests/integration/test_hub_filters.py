"""Hub filters and DiagnosticFilter on a real hub connection (Channels' communicator).

What a client sees (error ids, refusals, changed arguments and results), what the server logs and
counts (``conduit_hub_invocations_total``, ``conduit_hub_invocation_duration_seconds``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from django.test import override_settings
from prometheus_client import REGISTRY

from hubs.errors import HubError
from hubs.filters import HubFilter, HubInvocation
from hubs.methods import hub_method
from hubs.metrics import hub_metrics
from hubs.protocol import CompletionMessage, InvocationMessage, StreamItemMessage
from hubs.routing import websocket_application
from tests.conftest import TEST_HUBS
from tests.support.echo_hub import EchoHub

pytestmark = [pytest.mark.django_db(transaction=True)]

ECHO = "/hubs/echo"
DIAG = "/hubs/diag"
DIAGNOSTICS = "hubs.diagnostics"
HERE = __name__
SEEN: list[tuple[str, Any]] = []
ERROR_ID = re.compile(r"Error id: ([0-9a-f]{12})\.")


class DiagHub(EchoHub):
    hub_name = "diag"

    @hub_method
    async def crash_midstream(self, n: int):
        for i in range(n):
            yield i
        raise RuntimeError("stream internals")


@pytest.fixture
def ws_app():
    return websocket_application({**TEST_HUBS, "hubs/diag": DiagHub})


class First(HubFilter):
    async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
        SEEN.append(("first", id(self)))
        return await call_next(invocation)


class Second(HubFilter):
    async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
        SEEN.append(("second", (invocation.method, invocation.streaming, list(invocation.arguments))))
        return await call_next(invocation)


class Gatekeeper(HubFilter):
    """Refuses Echo("forbidden") and any stream of more than 3 items."""

    async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
        if invocation.method == "Echo" and invocation.arguments == ["forbidden"]:
            raise HubError("Echoing that is not allowed.")
        if invocation.method == "Count" and invocation.arguments[0] > 3:
            raise HubError("At most 3 items.")
        return await call_next(invocation)


class Rewriter(HubFilter):
    """Upper-cases Echo's string argument and wraps every Add result."""

    async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
        if invocation.method == "Echo" and isinstance(invocation.arguments[0], str):
            invocation.arguments = [invocation.arguments[0].upper()]
        result = await call_next(invocation)
        return {"sum": result} if invocation.method == "add" else result


class Buggy(HubFilter):
    async def invoke(self, invocation: HubInvocation, call_next: Any) -> Any:
        raise ZeroDivisionError("a bug in a filter")


def sample(name: str, **labels: str) -> float:
    hub_metrics()  # registered
    return REGISTRY.get_sample_value(name, labels) or 0.0


def invocation_samples(hub: str, method: str, outcome: str) -> tuple[float, float, float]:
    labels = {"hub": hub, "method": method, "outcome": outcome}
    return (
        sample("conduit_hub_invocations_total", **labels),
        sample("conduit_hub_invocation_duration_seconds_count", **labels),
        sample("conduit_hub_invocation_duration_seconds_sum", **labels),
    )


def diagnostics(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == DIAGNOSTICS]


# ---------------------------------------------------------------------------- the default filter


async def test_an_unexpected_error_reaches_the_client_as_an_error_id_that_the_log_names(hub_client, caplog):
    client = await hub_client(ECHO)
    before = invocation_samples("echo", "Fail", "error")
    done = await client.invoke("Fail", False)
    match = ERROR_ID.search(done.error or "")
    assert match, done.error
    error_id = match.group(1)
    assert done.error == f"An unexpected error occurred invoking 'Fail' on the server. Error id: {error_id}."
    assert "secret" not in done.error
    [record] = diagnostics(caplog)
    assert (record.levelno, record.outcome, record.error_id) == (logging.ERROR, "error", error_id)
    assert (record.hub, record.method, record.invocation_id) == ("echo", "Fail", "0")
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert "secret internals" in caplog.text and "Traceback" in caplog.text
    # Counted once, as an error (not hub_error), and timed.
    after = invocation_samples("echo", "Fail", "error")
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)
    assert after[2] > before[2]
    assert not any(r.name == "hubs.invoker" and r.levelno >= logging.ERROR for r in caplog.records)  # logged once
    assert (await client.invoke("Echo", 1)).result == 1  # the connection serves on


@override_settings(CONDUIT_RT={"ENABLE_DETAILED_ERRORS": True})
async def test_detailed_errors_add_type_and_text_after_the_error_id(hub_client, caplog):
    client = await hub_client(ECHO)
    done = await client.invoke("Fail", False)
    error_id = diagnostics(caplog)[0].error_id
    assert done.error == (
        f"An unexpected error occurred invoking 'Fail' on the server. Error id: {error_id}. "
        "RuntimeError: secret internals"
    )


async def test_hub_errors_and_results_pass_unchanged_and_are_logged(hub_client, caplog):
    caplog.set_level(logging.DEBUG, logger=DIAGNOSTICS)
    client = await hub_client(ECHO)
    hub_errors = invocation_samples("echo", "Fail", "hub_error")
    oks = invocation_samples("echo", "add", "ok")
    shown = await client.invoke("Fail", True)
    assert shown.error == (
        "An unexpected error occurred invoking 'Fail' on the server. HubException: this is fine to show"
    )
    assert (await client.invoke("ADD", 2, 3)).result == 5
    info, debug = diagnostics(caplog)
    assert (info.levelno, info.outcome, info.method) == (logging.INFO, "hub_error", "Fail")
    assert (debug.levelno, debug.outcome, debug.method) == (logging.DEBUG, "ok", "add")  # declared name
    assert debug.connection_id == info.connection_id and debug.connection_id
    assert info.correlation_id != debug.correlation_id  # fresh per invocation
    assert invocation_samples("echo", "Fail", "hub_error")[:2] == (hub_errors[0] + 1, hub_errors[1] + 1)
    assert invocation_samples("echo", "add", "ok")[:2] == (oks[0] + 1, oks[1] + 1)


async def test_the_clients_correlation_id_header_is_logged(hub_client, caplog):
    caplog.set_level(logging.DEBUG, logger=DIAGNOSTICS)
    client = await hub_client(ECHO)
    await client.send(
        InvocationMessage(
            target="Echo", arguments=["x"], invocation_id="c1", headers={"correlationId": "checkout-7"}
        )
    )
    done = await client.receive_skipping_pings()
    assert isinstance(done, CompletionMessage) and done.result == "x"
    [record] = diagnostics(caplog)
    assert record.correlation_id == "checkout-7"
    assert "correlation_id=checkout-7" in record.getMessage()


async def test_streams_are_logged_at_their_end_and_unexpected_stream_errors_get_an_id(hub_client, caplog):
    caplog.set_level(logging.DEBUG, logger=DIAGNOSTICS)
    client = await hub_client(DIAG)
    before = invocation_samples("diag", "CrashMidstream", "error")
    await client.stream("Count", 2)
    messages = [await client.receive_skipping_pings() for _ in range(3)]
    assert [m.item for m in messages[:2]] == [0, 1] and messages[2].error is None
    [ok] = diagnostics(caplog)
    assert (ok.method, ok.outcome) == ("Count", "ok")

    await client.stream("CrashMidstream", 1)
    assert isinstance(await client.receive_skipping_pings(), StreamItemMessage)
    done = await client.receive_skipping_pings()
    error_id = ERROR_ID.search(done.error).group(1)
    assert done.error == f"An error occurred on the server while streaming results. Error id: {error_id}."
    failed = diagnostics(caplog)[-1]
    assert (failed.outcome, failed.error_id, failed.levelno) == ("error", error_id, logging.ERROR)
    after = invocation_samples("diag", "CrashMidstream", "error")
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)


# ---------------------------------------------------------------------------- configured filters


@override_settings(CONDUIT_RT={"HUB_FILTERS": [f"{HERE}.First", f"{HERE}.Second"]})
async def test_filters_run_outermost_first_for_calls_and_streams_with_one_instance(hub_client):
    SEEN.clear()
    client = await hub_client(ECHO)
    assert (await client.invoke("Echo", "a")).result == "a"
    assert (await client.invoke("add", 1, 2)).result == 3
    await client.stream("Count", 1)
    assert (await client.receive_skipping_pings()).item == 0
    assert isinstance(await client.receive_skipping_pings(), CompletionMessage)
    assert [name for name, _ in SEEN] == ["first", "second"] * 3
    assert [seen for name, seen in SEEN if name == "second"] == [
        ("Echo", False, ["a"]),
        ("add", False, [1, 2]),
        ("Count", True, [1]),
    ]
    assert len({seen for name, seen in SEEN if name == "first"}) == 1  # one instance for every call


async def test_overriding_the_setting_rebuilds_the_chain_for_open_connections(hub_client):
    SEEN.clear()
    client = await hub_client(ECHO)
    assert (await client.invoke("Echo", "a")).result == "a"
    assert SEEN == []
    with override_settings(CONDUIT_RT={"HUB_FILTERS": [f"{HERE}.First"]}):
        assert (await client.invoke("Echo", "b")).result == "b"
        assert [name for name, _ in SEEN] == ["first"]
    with override_settings(CONDUIT_RT={"HUB_FILTERS": [f"{HERE}.First"]}):
        assert (await client.invoke("Echo", "c")).result == "c"
    first, again = (seen for _, seen in SEEN)
    assert first != again  # a new instance after the settings changed
    assert (await client.invoke("Echo", "d")).result == "d"
    assert len(SEEN) == 2  # back to the default chain


@override_settings(
    CONDUIT_RT={"HUB_FILTERS": ["hubs.diagnostics.DiagnosticFilter", f"{HERE}.Gatekeeper"]}
)
async def test_a_filter_refuses_calls_and_streams_with_a_hub_error(hub_client, caplog):
    client = await hub_client(ECHO)
    before = invocation_samples("echo", "Echo", "hub_error")
    refused = await client.invoke("Echo", "forbidden")
    assert refused.error == (
        "An unexpected error occurred invoking 'Echo' on the server. HubException: Echoing that is not allowed."
    )
    assert invocation_samples("echo", "Echo", "hub_error")[0] == before[0] + 1
    assert [(r.outcome, r.levelno) for r in diagnostics(caplog)] == [("hub_error", logging.INFO)]
    assert (await client.invoke("Echo", "fine")).result == "fine"
    await client.stream("Count", 4)
    done = await client.receive_skipping_pings()
    assert isinstance(done, CompletionMessage)
    assert (
        done.error
        == "An error occurred on the server while streaming results. HubException: At most 3 items."
    )


@override_settings(CONDUIT_RT={"HUB_FILTERS": [f"{HERE}.Rewriter"]})
async def test_a_filter_changes_arguments_and_results(hub_client):
    client = await hub_client(ECHO)
    assert (await client.invoke("Echo", "shout")).result == "SHOUT"
    assert (await client.invoke("SyncEcho", "quiet")).result == "quiet"  # sync methods too
    assert (await client.invoke("Add", 2, 3)).result == {"sum": 5}


async def test_a_bug_in_a_filter_is_an_unexpected_error(hub_client, caplog):
    with override_settings(
        CONDUIT_RT={"HUB_FILTERS": ["hubs.diagnostics.DiagnosticFilter", f"{HERE}.Buggy"]}
    ):
        client = await hub_client(ECHO)
        done = await client.invoke("Echo", 1)
        error_id = ERROR_ID.search(done.error).group(1)
        assert diagnostics(caplog)[0].error_id == error_id
        assert "a bug in a filter" in caplog.text
    with override_settings(CONDUIT_RT={"HUB_FILTERS": [f"{HERE}.Buggy"]}):
        caplog.clear()
        before = invocation_samples("echo", "Echo", "error")
        done = await client.invoke("Echo", 1)
        assert (
            done.error == "An unexpected error occurred invoking 'Echo' on the server."
        )  # no id: no diagnostics
        assert invocation_samples("echo", "Echo", "error")[0] == before[0] + 1
        assert any(r.name == "hubs.invoker" and r.exc_info for r in caplog.records)  # the hub logged it


@override_settings(CONDUIT_RT={"HUB_FILTERS": []})
async def test_without_filters_the_hub_still_counts_and_times_every_outcome(hub_client, caplog):
    caplog.set_level(logging.DEBUG, logger=DIAGNOSTICS)
    client = await hub_client(ECHO)
    before = {o: invocation_samples("echo", "Fail", o) for o in ("hub_error", "error")}
    oks = invocation_samples("echo", "Echo", "ok")
    await client.invoke("Fail", True)
    await client.invoke("Fail", False)
    assert (await client.invoke("Echo", 3)).result == 3
    for outcome, (count, observed, _) in before.items():
        assert invocation_samples("echo", "Fail", outcome)[:2] == (count + 1, observed + 1)
    assert invocation_samples("echo", "Echo", "ok")[:2] == (oks[0] + 1, oks[1] + 1)
    assert diagnostics(caplog) == []
