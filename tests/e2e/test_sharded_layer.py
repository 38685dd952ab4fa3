"""The channel layer sharded over two Redis servers, with the official JS client across two daphnes.

The site lists two Redis servers of the test's own in ``CHANNEL_LAYER_REDIS_URLS``; its stores
(histories, pending acks, memberships, the cache, Celery) stay on ``REDIS_URL`` (the shared Redis,
a key prefix of the site's own). A client on daphne A and one on daphne B follow the same two
tasks, chosen so that the two tasks' groups hash to different shards: whichever shard a process's
channel hashes to, one of the groups it receives lives on the other one, so every process is sent
across shards. Events from other processes (``manage.py notify_task``, a shell) reach both, the
acknowledged completion is acknowledged, and a send to a user connected to B only reaches B;
each daphne's ``/health/`` finds its layer round trip, however the shards fall.

Then the sharding itself: both shards hold layer groups, each group on the shard its name hashes
to (and no layer key on ``REDIS_URL``, no store key on the shards), and each shard serves the
blocking receives of exactly the process channels that hash to it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from channels_redis.core import RedisChannelLayer

from .harness import TASK_EVENTS, ClientProcess, RedisServer, Server, Site, js_client

pytestmark = pytest.mark.e2e

#: Tasks created at most while looking for one whose group lives on each shard (each lands on
#: either with probability 1/2, so 32 tries miss a shard with probability 2**-31).
MAX_TASKS = 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Iterator[list[RedisServer]]:
    started = [RedisServer(tmp_path_factory.mktemp(f"layer-shard-{index}")) for index in range(2)]
    for shard in started:
        shard.start()
    yield started
    for shard in started:
        shard.stop()


@pytest.fixture(scope="module")
def sharded(make_site, shards) -> Iterator[tuple[Site, Server, Server]]:
    site = make_site(CHANNEL_LAYER_REDIS_URLS=",".join(shard.url for shard in shards))
    first, second = site.server(), site.server()
    yield site, first, second
    site.close()


def layer_group(site: Site, task_id: str) -> str:
    """The channel-layer group of a task of the demo's TaskHub (``hubs/naming.py``)."""
    return f"{site.env['CONDUIT_RT_KEY_PREFIX']}.tasks.g.task-{task_id}"


def keys(client: redis.Redis, pattern: str = "*") -> set[str]:
    return {key.decode() for key in client.scan_iter(match=pattern, count=1000)}


def calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def connect(server: Server, token: str, clients: list[ClientProcess], **options: Any) -> ClientProcess:
    client = js_client(f"{server.url}/hubs/tasks", token, events=[*TASK_EVENTS, "Notice"], **options)
    clients.append(client)
    client.expect("connected", timeout=20)
    return client


def test_official_clients_across_two_daphnes_over_a_layer_sharded_on_two_redis(
    sharded, shards, redis_url, clients
):
    site, first, second = sharded
    prefix = site.env["CONDUIT_RT_KEY_PREFIX"]
    layer_prefix = f"{prefix}:layer:"
    # The layer's own hashing (nothing is connected): the shard of a group or a channel name.
    ring = RedisChannelLayer(hosts=[shard.url for shard in shards], prefix=layer_prefix)
    shard_clients = [redis.Redis.from_url(shard.url) for shard in shards]
    store = redis.Redis.from_url(redis_url)
    alice, bob = site.token("alice"), site.token("bob")

    # One task whose group lives on each shard, created through the REST API of daphne B.
    tasks: dict[int, str] = {}
    for _ in range(MAX_TASKS):
        task_id = second.create_task(alice)
        tasks.setdefault(ring.consistent_hash(layer_group(site, task_id)), task_id)
        if len(tasks) == 2:
            break
    assert sorted(tasks) == [0, 1], f"no task group on one of the shards after {MAX_TASKS} tasks"

    on_first = connect(first, alice, clients)
    on_second = connect(second, alice, clients, protocol="messagepack")
    bob_on_second = connect(second, bob, clients)
    for client in (on_first, on_second):
        for task_id in tasks.values():
            subscribed = client.invoke("SubscribeToTask", task_id, timeout=15)
            assert subscribed["event"] == "result", subscribed
            assert subscribed["result"]["taskId"] == task_id
        assert client.invoke("Ping")["result"]["pong"] == "ok"

    # Fire-and-forget progress from another process reaches both daphnes, from both shards' groups.
    for shard, task_id in tasks.items():
        site.manage("notify_task", task_id, "--progress", str(40 + shard), "--message", f"shard {shard}")
    for client in (on_first, on_second):
        for shard, task_id in tasks.items():
            payload = client.expect("message", timeout=10, target="TaskProgress")["payload"]
            assert (payload["taskId"], payload["progressPercentage"]) == (task_id, 40 + shard), payload
            assert payload["message"] == f"shard {shard}"
            assert payload["status"] == "running"
            assert payload["retryCount"] == 0
            assert len(payload["messageId"]) == 32
            assert payload["timestamp"].endswith("Z")

    # An acknowledged completion per task: both connections get each one and acknowledge it.
    completed = {
        task_id: site.shell(
            f"from conduit_rt.demo import task_events; print(task_events.task_completed('{task_id}'))"
        )
        for task_id in tasks.values()
    }
    for client in (on_first, on_second):
        received = [client.expect("message", timeout=10, target="TaskCompleted")["payload"] for _ in tasks]
        assert {p["taskId"]: p["messageId"] for p in received} == completed, received
    assert json.loads(site.manage("delivery_status"))["pending"] == 4  # 2 completions x 2 connections
    for client in (on_first, on_second):
        for message_id in completed.values():
            assert client.invoke("AcknowledgeMessage", message_id)["result"] is True
    status = json.loads(site.manage("delivery_status"))
    assert (status["pending"], status["dead_letters"]) == (0, 0), status

    # A send to bob, connected to daphne B only, from another process: B's connection gets it.
    site.shell(
        "from django.contrib.auth import get_user_model; from hubs.send import get_hub_context; "
        "bob = get_user_model().objects.get(username='bob'); "
        "get_hub_context('conduit_rt.demo.hubs.TaskHub').clients.user(bob.pk).send('Notice', {'text': 'hi bob'})"
    )
    assert bob_on_second.expect("message", timeout=10, target="Notice")["payload"]["text"] == "hi bob"
    assert not on_first.has("Notice") and not on_second.has("Notice")

    # The sharding is real. Both shards hold groups of the layer, each group on its own shard,
    # naming both processes' channels.
    groups = [keys(client, f"{layer_prefix}:group:*") for client in shard_clients]
    for shard, task_id in tasks.items():
        key = f"{layer_prefix}:group:{layer_group(site, task_id)}"
        assert key in groups[shard], (key, groups)
        assert key not in groups[1 - shard], (key, groups)
    for shard, found in enumerate(groups):
        for key in found:
            assert ring.consistent_hash(key.removeprefix(f"{layer_prefix}:group:")) == shard, key
    members = {
        member.decode()
        for shard, task_id in tasks.items()
        for member in shard_clients[shard].zrange(f"{layer_prefix}:group:{layer_group(site, task_id)}", 0, -1)
    }
    assert len(members) == 2, members  # one channel per daphne process (hubs/fanout.py)
    assert all(member.startswith("conduit.process.") and "!" in member for member in members), members

    # Each process receives from the shard its channel's name hashes to, and only there: the
    # blocking pops on each shard are those of the process channels that hash to it.
    receiving = {ring.consistent_hash(ring.non_local_name(member)) for member in members}
    assert {shard for shard, client in enumerate(shard_clients) if calls(client, "bzpopmin")} == receiving

    # Only the layer moved: nothing of it on REDIS_URL, and none of the stores on the shards.
    assert keys(store, f"{layer_prefix}*") == set()
    assert keys(store, f"{prefix}:stream:*"), "the group histories live on REDIS_URL"
    for client in shard_clients:
        assert {key for key in keys(client) if not key.startswith(layer_prefix)} == set()


def channel_layer_health(server: Server) -> dict[str, Any]:
    """The ``channel_layer`` check of one ``GET /health/`` (200 or 503: other checks may fail)."""
    try:
        with urllib.request.urlopen(server.url + "/health/", timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    return body["checks"]["channel_layer"]


def test_the_health_check_round_trip_works_over_a_sharded_layer(sharded):
    # Each request makes a fresh channel, so its shard is new each time: with a plain ``send`` to
    # it (channels-redis#221) about half of these answered "No round trip ... within 2 s".
    _, first, second = sharded
    for server in (first, second):
        for _ in range(12):
            check = channel_layer_health(server)
            assert check["status"] == "healthy", check
