"""A slow consumer's way back: a client that stops reading its socket while its task group gets a
burst of large messages is closed as a slow consumer; after it reconnects (a new connection, the
same user) and resumes (``ResumeTask`` with the last seq it processed, as the JS helper does) it
has lost no acknowledged message and gets back what it missed of the fire-and-forget stream.

The burst (one sender, in order): 300 fire-and-forget ``Blob`` events of 200 kB, a
fire-and-forget ``TaskProgress`` after every 10th, an acknowledged ``Receipt`` (``ack=True``)
after every 25th, and the acknowledged ``TaskCompleted`` last. Before it the client processed
and acknowledged three stream messages (seq 1-3). docs/delivery.md promises, and the test checks:

- the server closes the stalled connection as a slow consumer (``conduit_slow_consumers_total``
  is 1) and the client sees its end (a Close with ``allowReconnect``, or the connection dropped);
- the new connection gets every acknowledged message of the burst, by ``messageId`` (those still
  pending for the old connection by adoption, the others by the replay), acknowledges them, and
  then nothing is pending, spooled or dead-lettered; the one acknowledged before the stall does
  not come again;
- ``ResumeTask`` answers ``recovered: true`` with the stream's last seq and epoch (the gap is
  within the history's window), and replays the missed messages with their original ids and
  seqs: processed in seq order, the client has every seq 1..last exactly once;
- the resumed connection is not closed (no second slow consumer), and the server's peak memory
  stays far below the 60 MB burst.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .harness import CLIENTS, PYTHON, SERVER_KINDS, ClientProcess, Server, Site, scrape
from .test_load import ProcessSampler

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EVENTS, SIZE = 300, 200_000
STALL_AFTER = 3  # the stream messages the client processes before it stops reading
HUB = "conduit_rt.demo.hubs.TaskHub"
SENDER = (
    "import json\n"
    "from hubs.send import get_hub_context\n"
    "from hubs.task_progress.events import TaskEvents\n"
    f"events = TaskEvents('{HUB}')\n"
    f"group = get_hub_context('{HUB}').clients.group('task-{{task}}')\n"
    "sent = []\n"
    "def send(method, acked, **payload):\n"
    "    sent.append([method, group.send(method, {{'task_id': '{task}', **payload}}, ack=acked), acked])\n"
)
# seq 1-3: what the client processes (and acknowledges) before it stalls.
BEFORE = SENDER + (
    "sent.append(['TaskProgress', events.progress('{task}', 1, message='before'), False])\n"
    "send('Notice', True, n=0)\n"
    "sent.append(['TaskProgress', events.progress('{task}', 2, message='before'), False])\n"
    "print(json.dumps(sent))\n"
)
BURST = SENDER + (
    "for n in range({events}):\n"
    "    send('Blob', False, n=n, data='x' * {size})\n"
    "    if n % 10 == 9:\n"
    "        percent = min(99, (n + 1) * 100 // {events})\n"
    "        sent.append(['TaskProgress', events.progress('{task}', percent, message=f'blob {{n}}'), False])\n"
    "    if n % 25 == 12:\n"
    "        send('Receipt', True, n=n)\n"
    "sent.append(['TaskCompleted', events.completed('{task}', result={{'blobs': {events}}}), True])\n"
    "print(json.dumps(sent))\n"
)


def sent_by(site: Site, code: str, timeout: float) -> list[tuple[str, str, bool]]:
    """Run a sender in ``manage.py shell``: the (method, messageId, acknowledged) it sent, in order."""
    return [tuple(item) for item in json.loads(site.shell(code, timeout=timeout).splitlines()[-1])]


def metric(server: Server, name: str) -> float | None:
    return scrape(server, timeout=10).get(f'{name}{{hub="tasks"}}')


def delivery_status(site: Site) -> dict[str, int]:
    return json.loads(site.manage("delivery_status", timeout=60))


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_slow_consumer_that_reconnects_and_resumes_loses_nothing(make_site, clients, kind):
    site = make_site()
    server = site.server(kind=kind)
    token = site.token("alice")
    task_id = server.create_task(token)
    config = {
        "url": f"{server.url}/hubs/tasks",
        "token": token,
        "taskId": task_id,
        "stallAfter": STALL_AFTER,
        "endTimeout": 20,
    }
    reader = ClientProcess([PYTHON, str(CLIENTS / "resuming_reader.py"), json.dumps(config)], "resuming")
    clients.append(reader)
    reader.expect("subscribed", timeout=20)

    before = sent_by(site, BEFORE.format(task=task_id), timeout=60)
    stalled = reader.expect("stalled", timeout=30)
    assert stalled["lastSeq"] == STALL_AFTER == len(before), stalled
    epoch = stalled["epoch"]
    assert epoch
    [notice] = [message_id for _, message_id, acked in before if acked]
    assert [(a["ids"], a["pending"]) for a in reader.take_events("acked")] == [([notice], 1)]

    # 1. The burst while the client reads nothing.
    assert server.process is not None
    with ProcessSampler(server.process.pid) as sampler:
        burst = sent_by(site, BURST.format(task=task_id, events=EVENTS, size=SIZE), timeout=180)
        slow = metric(server, "conduit_slow_consumers_total")
        peak_kib = sampler.memory()["VmHWM"]
    sent = before + burst
    by_seq = {seq: message_id for seq, (_, message_id, _) in enumerate(sent, start=1)}
    last_seq = len(sent)
    acked_in_burst = [message_id for _, message_id, acked in burst if acked]
    assert len(acked_in_burst) == EVENTS // 25 + 1
    # 2. Closed as a slow consumer, and torn down on the server.
    assert slow == 1.0, slow
    print(f"\n{kind}: peak RSS {peak_kib / 1024:.0f} MiB for a {EVENTS * SIZE / 1e6:.0f} MB burst")
    assert peak_kib < 400 * 1024

    reader.command(cmd="read")
    end = wait_for_end(reader, timeout=40)
    deadline = time.monotonic() + 30
    while metric(server, "conduit_active_connections") != 0.0:
        assert time.monotonic() < deadline, "the slow consumer was not torn down"
        time.sleep(0.2)  # polling another process: nothing to wait on instead
    print(f"{kind}: the stalled client saw {end}")
    assert end["event"] in ("closed", "ended"), end  # on both servers: the abort resets the socket
    if end["event"] == "closed":
        assert end["allowReconnect"] is True
        assert "did not read its messages fast enough" in end["error"]
    processed_before = [s for e in reader.take_events("processed") for s in e["seqs"]]
    assert processed_before == list(range(1, end["lastSeq"] + 1)), processed_before
    assert end["lastSeq"] < last_seq  # it did miss part of the stream
    reader.take_events("message")  # those of the first connection
    reader.take_events("acked")  # (none: it was closed before it could acknowledge more)

    # 3. Reconnect and resume from the last seq processed.
    reader.command(cmd="reconnect")
    reader.expect("connected", timeout=20)
    resumed = wait_for_resume(reader, timeout=60)
    acks = wait_for_acks(reader, set(acked_in_burst), timeout=60)
    reader.command(cmd="stop")
    peak_kib = sampler.memory()["VmHWM"]  # the process's peak so far: the burst and the replay

    answer = resumed["answer"]
    assert answer["recovered"] is True, answer
    assert answer["seq"] == last_seq and answer["epoch"] == epoch, answer
    assert answer["replayed"] == last_seq - end["lastSeq"], answer
    assert not reader.take_events("closed") and not reader.take_events("ended")
    messages = [m for m in reader.take_events("message") if m["conn"] == 2]
    processed = processed_before + [s for e in reader.take_events("processed") for s in e["seqs"]]
    # Every seq once, in order, each with the id its sender got.
    assert processed == list(range(1, last_seq + 1)), (processed[:10], processed[-10:], len(processed))
    for message in messages:
        if message["seq"] is not None:
            assert message["epoch"] == epoch
            assert by_seq[message["seq"]] == message["messageId"], message
    received = {m["messageId"] for m in messages}
    assert set(by_seq[s] for s in range(end["lastSeq"] + 1, last_seq + 1)) <= received
    # Every acknowledged message of the burst came on the new connection, was acknowledged there;
    # the one acknowledged before the stall did not come again.
    acked_received = {m["messageId"] for m in messages if m["requiresAck"]}
    assert set(acked_in_burst) <= acked_received, set(acked_in_burst) - acked_received
    assert set(acked_in_burst) <= {i for a in acks for i in a["ids"]}
    assert notice not in received
    # Those that came again (retryCount > 0) were still pending for the old connection: adopted by
    # the new one, whose acks cleared them; the others were sent after the old one was gone.
    adopted = sorted({m["messageId"] for m in messages if m["requiresAck"] and m["retryCount"]})
    assert sum(a["pending"] for a in acks) == len(adopted), acks
    print(
        f"{kind}: resumed from seq {end['lastSeq']} of {last_seq}: {answer}; "
        f"{len(acked_in_burst)} acknowledged, {len(adopted)} of them redelivered (adopted), "
        f"{len(messages)} messages on the new connection; peak RSS {peak_kib / 1024:.0f} MiB"
    )
    assert peak_kib < 400 * 1024

    # 4. Nothing stays pending; the resumed connection was no slow consumer.
    deadline = time.monotonic() + 20
    while (status := delivery_status(site))["pending"] != 0:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)  # polling another process: nothing to wait on instead
    assert status["spooled"] == 0 and status["dead_letters"] == 0, status
    assert status["messages"] == len(acked_in_burst) + 1, status
    assert metric(server, "conduit_slow_consumers_total") == 1.0


def wait_for_end(reader: ClientProcess, timeout: float) -> dict[str, Any]:
    """The first connection's end as its client saw it: closed, ended or silent."""
    deadline = time.monotonic() + timeout
    while True:
        for kind in ("closed", "ended", "silent"):
            found = reader.take_events(kind)
            if found:
                return found[0]
        assert time.monotonic() < deadline, f"no end of the first connection: {reader.stderr[-10:]}"
        reader.assert_no("__never__", within=0.2)  # waits on the client's output, not a clock


def wait_for_resume(reader: ClientProcess, timeout: float) -> dict[str, Any]:
    """``ResumeTask``'s answer; fails at once when the new connection ends before it."""
    deadline = time.monotonic() + timeout
    while True:
        for kind in ("resumed", "error", "closed", "ended"):
            found = reader.take_events(kind)
            if found and kind == "resumed":
                return found[0]
            if found:
                processed = [s for e in reader.take_events("processed") for s in e["seqs"]]
                got = [m for m in reader.take_events("message") if m["conn"] == 2]
                raise AssertionError(
                    f"ResumeTask got no answer: {found[0]}; the new connection had processed seqs "
                    f"{processed[:3]}..{processed[-3:]} ({len(processed)}) of {len(got)} messages: "
                    f"{[(m['target'], m['seq'], m['retryCount']) for m in got]}"
                )
        assert time.monotonic() < deadline, f"no answer to ResumeTask: {reader.stderr[-10:]}"
        reader.assert_no("__never__", within=0.2)  # waits on the client's output, not a clock


def wait_for_acks(reader: ClientProcess, wanted: set[str], timeout: float) -> list[dict[str, Any]]:
    """The client's ``AcknowledgeMessages`` answers on its new connection ({ids, pending}), once
    ``wanted`` are among the ids."""
    acks: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not wanted <= {i for a in acks for i in a["ids"]}:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not all acknowledged: {acks}; output: {reader.stderr[-10:]}"
        event = reader.expect("acked", timeout=remaining)
        assert event["error"] is None, event
        acks.append(event)
    return acks
