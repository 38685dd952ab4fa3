"""``/health/``: django-health-check checks of Conduit RT's dependencies, as JSON, 503 when unhealthy.

Every check is a django-health-check 4.x ``HealthCheck``. A check that fails in a way the service
survives raises ``ServiceWarning`` (the status is *degraded*, HTTP 200); one that means this
process cannot do its job raises ``ServiceUnavailable`` (*unhealthy*, HTTP 503). The checks:

- ``database``: ``SELECT 1`` (django-health-check's own check) → unhealthy.
- ``redis``: PING of ``CONDUIT_RT["REDIS_URL"]`` → unhealthy; skipped without one (embedded mode).
- ``channel_layer``: a message sent to a fresh channel of the default layer and received back
  → unhealthy.
- ``celery_workers``: a worker answers ``ping`` → degraded (``critical=True``: unhealthy);
  skipped while Celery runs tasks eagerly.
- ``stale_connections``: stale / active connections over ``HEALTH_STALE_RATIO`` → degraded.
- ``breaker``: the channel-layer breaker open in this process or in another serving process (as
  the connection monitor last heard) → degraded.
- ``dead_letters``: more than ``HEALTH_DEAD_LETTER_THRESHOLD`` dead letters created in the last
  ``HEALTH_DEAD_LETTER_WINDOW`` seconds → degraded.

Each check is bounded by ``HEALTH_TIMEOUT`` and the checks run concurrently, so a request takes
about that long at worst. Checks that need the event loop are ``async`` and run on the serving
loop (never ``async_to_sync`` from a thread); blocking clients (the ORM, Celery's control API) run
in a worker thread under ``asyncio.wait_for``. Operators' guide: ``docs/operations.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import health_check
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from health_check.base import HealthCheck, HealthCheckResult
from health_check.exceptions import ServiceUnavailable, ServiceWarning
from health_check.views import HealthCheckView, MediaType

from hubs.conf import conduit_settings
from hubs.fanout import PROCESS_CHANNEL_PREFIX

if TYPE_CHECKING:
    from celery import Celery

    from monitoring.monitor import Monitor

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The prefix of the round-trip channel. It must be the fan-out router's (``hubs/fanout.py``):
#: channels-redis reads the process-specific channels of one prefix from one Redis list, under one
#: lock per layer. With another prefix the probe would wait for the router's blocking read
#: (5 s) to give the lock back; with the same one, whoever reads hands the probe its message.
ROUND_TRIP_PREFIX = PROCESS_CHANNEL_PREFIX


class Status(enum.StrEnum):
    """The status of one check, and of the whole (``skipped`` is for checks only)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    SKIPPED = "skipped"


def health_timeout() -> float:
    """Seconds each check may wait for its dependency (``HEALTH_TIMEOUT``)."""
    return float(conduit_settings.HEALTH_TIMEOUT)


def get_connection_monitor() -> Monitor:
    """The connection monitor (``monitoring.monitor``), imported when a check first needs it so an
    import error there fails the checks that read it, not the whole endpoint."""
    from monitoring.monitor import get_monitor

    return get_monitor()


async def in_thread(func: Callable[[], T], budget: float) -> T:
    """``func()`` in a worker thread, given up on after ``budget`` seconds (``TimeoutError``).

    A thread cannot be stopped: a call given up on runs on until its own client's timeout, but the
    request no longer waits for it.
    """
    return await asyncio.wait_for(asyncio.to_thread(func), budget)


def describe(exc: BaseException) -> str:
    """A short account of a failure: the type, and the text if it is short (redis-py's and the
    database drivers' texts name hosts and ports, not passwords)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text and len(text) <= 200 else type(exc).__name__


def redis_location(url: str) -> str:
    """``host:port/db`` of a Redis URL, without user or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


@dataclasses.dataclass
class ConduitCheck(HealthCheck):
    """Base of Conduit RT's checks: a stable ``name``, the ``HEALTH_TIMEOUT`` budget, an optional
    reason to skip, and a ``detail`` that says what a passing check saw."""

    name: ClassVar[str] = ""
    #: Filled in by ``run`` when the check passes (shown instead of "OK").
    detail: str = dataclasses.field(default="", init=False, repr=False, compare=False)

    @property
    def timeout(self) -> datetime.timedelta:  # type: ignore[override]
        # django-health-check gives up on a check after this budget plus one second.
        return datetime.timedelta(seconds=health_timeout())

    def skip_reason(self) -> str | None:
        """Why this check does not apply to this deployment, or None when it does."""
        return None


@dataclasses.dataclass
class Database(ConduitCheck, health_check.Database):
    """``SELECT 1`` on a database alias: django-health-check's check with our name and budget."""

    name: ClassVar[str] = "database"


@dataclasses.dataclass
class RedisPing(ConduitCheck):
    """PING to ``CONDUIT_RT["REDIS_URL"]`` on a fresh connection, without retries."""

    name: ClassVar[str] = "redis"

    def skip_reason(self) -> str | None:
        if not conduit_settings.REDIS_URL:
            return "No REDIS_URL: the embedded mode has no Redis."
        return None

    async def run(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        url = str(conduit_settings.REDIS_URL)
        timeout = health_timeout()
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        try:
            await asyncio.wait_for(client.ping(), timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable(
                f"Redis at {redis_location(url)}: no answer within {timeout:g} s"
            ) from exc
        except Exception as exc:  # redis-py raises its own errors, not OSError's
            raise ServiceUnavailable(f"Redis at {redis_location(url)}: {describe(exc)}") from exc
        finally:
            await client.aclose()
        self.detail = f"PONG from {redis_location(url)}"


@dataclasses.dataclass
class ChannelLayerRoundTrip(ConduitCheck):
    """A message to a fresh channel of the layer ``alias`` (sent to a group of its own, as hub
    messages are), received back by this process."""

    name: ClassVar[str] = "channel_layer"
    alias: str = "default"

    def skip_reason(self) -> str | None:
        from channels.layers import get_channel_layer

        if get_channel_layer(self.alias) is None:
            return f"No channel layer {self.alias!r} is configured."
        return None

    async def run(self) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer(self.alias)
        assert layer is not None
        timeout = health_timeout()
        token = uuid.uuid4().hex

        async def round_trip() -> None:
            # Through a group of its own, as every hub message travels: with the layer sharded
            # over several Redis servers, channels-redis's plain ``send`` to a process channel
            # hashes the whole name and may write to a server its ``receive`` does not read
            # (channels-redis#221); ``group_send`` finds the server the channel is read from.
            channel = await layer.new_channel(prefix=ROUND_TRIP_PREFIX)
            group = f"conduit.health.{token}"
            await layer.group_add(group, channel)
            try:
                await layer.group_send(group, {"type": "conduit.health", "token": token})
                while (await layer.receive(channel)).get("token") != token:
                    pass  # nothing else is sent to a fresh channel; a stray message is skipped
            finally:
                await layer.group_discard(group, channel)

        try:
            await asyncio.wait_for(round_trip(), timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable(f"No round trip on layer {self.alias!r} within {timeout:g} s") from exc
        except Exception as exc:
            raise ServiceUnavailable(f"Layer {self.alias!r}: {describe(exc)}") from exc
        self.detail = f"Round trip on layer {self.alias!r} ({type(layer).__name__})"


@dataclasses.dataclass
class CeleryWorkers(ConduitCheck):
    """At least one Celery worker answers ``ping`` (over the broker, within ``HEALTH_TIMEOUT``).

    No answer is *degraded*, not unhealthy: this process still serves connections and sends; what
    workers run (retry passes, dead-lettering, the demo task) waits in the broker and in the
    database until one is back, and nothing acknowledged is lost. Taking every web process out of
    the load balancer for it would turn a backlog into an outage. ``critical=True`` makes it
    unhealthy for deployments that want that.
    """

    name: ClassVar[str] = "celery_workers"
    critical: bool = dataclasses.field(default=False, repr=False)

    def skip_reason(self) -> str | None:
        if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
            return "Celery runs tasks eagerly in this process (CELERY_TASK_ALWAYS_EAGER)."
        return None

    def get_app(self) -> Celery:
        """The Celery app whose workers are pinged: the project's current app (the one its
        ``proj/__init__.py`` imports, as Celery's Django guide sets up), never a named project."""
        from celery import current_app

        return current_app._get_current_object()

    def fail(self, message: str) -> ServiceWarning | ServiceUnavailable:
        return ServiceUnavailable(message) if self.critical else ServiceWarning(message)

    def ping(self, wait: float) -> list[dict[str, Any]]:
        """Replies of the first worker to answer within ``wait`` seconds (blocking; one connection
        attempt of at most ``wait`` seconds, no retries: Celery's own policy retries for seconds)."""
        app = self.get_app()
        options = {
            **(app.conf.broker_transport_options or {}),
            "socket_connect_timeout": wait,
            "socket_timeout": wait,
        }
        with app.connection_for_write(connect_timeout=wait, transport_options=options) as connection:
            connection.ensure_connection(max_retries=0, timeout=wait)
            return list(app.control.ping(timeout=wait, limit=1, connection=connection) or [])

    async def run(self) -> None:
        # Half the budget to connect, half to wait for a reply. The Redis transport polls for
        # replies in whole seconds, so "nobody answers" takes at least a second.
        timeout = health_timeout()
        wait = timeout / 2
        try:
            replies = await in_thread(lambda: self.ping(wait), timeout)
        except TimeoutError as exc:
            raise self.fail(f"The broker did not answer within {timeout:g} s") from exc
        except Exception as exc:
            raise self.fail(f"The broker is unreachable: {describe(exc)}") from exc
        workers = [name for reply in replies for name, answer in reply.items() if answer == {"ok": "pong"}]
        if not workers:
            raise self.fail(f"No Celery worker answered within {wait:g} s")
        self.detail = f"{workers[0]} answered"


@dataclasses.dataclass
class MonitorCheck(ConduitCheck):
    """A check that reads the connection monitor."""

    def get_monitor(self) -> Monitor:
        return get_connection_monitor()


@dataclasses.dataclass
class StaleConnections(MonitorCheck):
    """Stale connections (idle past ``STALE_THRESHOLD``, or lease expired and not cleaned up yet)
    as a share of the active ones, over ``HEALTH_STALE_RATIO`` → degraded."""

    name: ClassVar[str] = "stale_connections"

    async def run(self) -> None:
        timeout = health_timeout()
        try:
            summary = await asyncio.wait_for(self.get_monitor().summary(), timeout)
        except TimeoutError as exc:
            raise ServiceWarning(f"The connection monitor did not answer within {timeout:g} s") from exc
        except Exception as exc:
            raise ServiceWarning(f"The connection monitor is unavailable: {describe(exc)}") from exc
        active, stale = int(summary.active), int(summary.stale)
        limit = float(conduit_settings.HEALTH_STALE_RATIO)
        if active and stale / active > limit:
            raise ServiceWarning(
                f"{stale} stale connection(s) for {active} active: "
                f"{stale / active:.1%} > {limit:.0%} (HEALTH_STALE_RATIO)"
            )
        self.detail = f"{stale} stale connection(s) for {active} active"


@dataclasses.dataclass
class CircuitBreakers(MonitorCheck):
    """The channel-layer breaker: this process's own, and every other serving process's as it last
    reported it to the connection monitor. Open anywhere → degraded (a half-open breaker is
    trying again and counts as closed)."""

    name: ClassVar[str] = "breaker"

    async def run(self) -> None:
        from hubs.delivery.breaker import BreakerState, get_breaker

        breaker = get_breaker()
        local = breaker.state
        opened = ["this process"] if local is BreakerState.OPEN else []
        timeout = health_timeout()
        try:
            from hubs.tally import process_identity

            own = process_identity().server_id
            servers = await asyncio.wait_for(self.get_monitor().servers(), timeout)
        except Exception as exc:  # the local state still counts: logged, not raised
            logger.warning("Health: could not read the breakers of other processes.", exc_info=True)
            others = f"other processes unknown ({describe(exc)})"
        else:
            servers = [s for s in servers if s.server_id != own]  # our state is fresher than our record
            opened += [s.server_id for s in servers if s.breaker_state == BreakerState.OPEN.value]
            others = f"{len(servers)} other process(es) reporting"
        if opened:
            raise ServiceWarning(f"Breaker {breaker.name!r} open in: {', '.join(opened)}")
        self.detail = f"{breaker.name!r} {local.value} here; {others}"


@dataclasses.dataclass
class DeadLetterGrowth(ConduitCheck):
    """More than ``HEALTH_DEAD_LETTER_THRESHOLD`` dead letters created in the last
    ``HEALTH_DEAD_LETTER_WINDOW`` seconds → degraded."""

    name: ClassVar[str] = "dead_letters"
    alias: str = "default"

    def count_since(self, since: datetime.datetime) -> int:
        """Dead letters created since ``since`` (blocking; on a connection closed afterwards)."""
        from hubs.models import DeadLetter

        with connections[self.alias].temporary_connection():
            return DeadLetter.objects.using(self.alias).filter(created_at__gte=since).count()

    async def run(self) -> None:
        window = float(conduit_settings.HEALTH_DEAD_LETTER_WINDOW)
        threshold = int(conduit_settings.HEALTH_DEAD_LETTER_THRESHOLD)
        since = timezone.now() - datetime.timedelta(seconds=window)
        timeout = health_timeout()
        try:
            count = await in_thread(lambda: self.count_since(since), timeout)
        except TimeoutError as exc:
            raise ServiceWarning(f"Counting dead letters took longer than {timeout:g} s") from exc
        except Exception as exc:  # the database's own state is the database check's to report
            raise ServiceWarning(f"Could not count dead letters: {describe(exc)}") from exc
        if count > threshold:
            raise ServiceWarning(
                f"{count} dead letters in the last {window:g} s > {threshold} (HEALTH_DEAD_LETTER_THRESHOLD)"
            )
        self.detail = f"{count} dead letter(s) in the last {window:g} s"


def check_name(check: HealthCheck) -> str:
    """The key of a check in the JSON output: its ``name``, else its ``repr``."""
    return getattr(check, "name", "") or repr(check)


def result_status(result: HealthCheckResult) -> Status:
    if result.error is None:
        return Status.HEALTHY
    if isinstance(result.error, ServiceWarning):
        return Status.DEGRADED
    return Status.UNHEALTHY


def overall_status(results: list[HealthCheckResult]) -> Status:
    """Unhealthy if any check is, else degraded if any check is, else healthy."""
    found = {result_status(r) for r in results}
    for status in (Status.UNHEALTHY, Status.DEGRADED):
        if status in found:
            return status
    return Status.HEALTHY


#: ``?format=`` values and what each Accept media type asks for.
FORMATS = frozenset({"json", "html", "text", "atom", "rss", "openmetrics"})
MEDIA_FORMATS = {
    "*/*": "json",
    "application/*": "json",
    "application/json": "json",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/*": "html",
    "text/plain": "text",
    "application/atom+xml": "atom",
    "application/rss+xml": "rss",
    "application/openmetrics-text": "openmetrics",
}


class HealthView(HealthCheckView):
    """django-health-check's view with three changes: JSON by default (a client that accepts
    anything, or sends no Accept header, gets JSON; browsers still get the HTML page), a
    *degraded* status for warnings (HTTP 200), and HTTP 503 instead of 500 when unhealthy."""

    checks = (
        Database,
        RedisPing,
        ChannelLayerRoundTrip,
        CeleryWorkers,
        StaleConnections,
        CircuitBreakers,
        DeadLetterGrowth,
    )

    results: list[HealthCheckResult]
    skipped: dict[str, str]
    status: Status

    def get_checks(self) -> Iterator[HealthCheck]:
        """The checks that apply to this deployment; the others land in ``self.skipped``."""
        self.skipped = {}
        for check in super().get_checks():
            reason = check.skip_reason() if isinstance(check, ConduitCheck) else None
            if reason is None:
                yield check
            else:
                self.skipped[check_name(check)] = reason

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        checks = list(self.get_checks())
        with self.get_executor() as executor:
            self.results = list(await asyncio.gather(*(check.get_result(executor) for check in checks)))
        self.status = overall_status(self.results)
        status_code = 503 if self.status is Status.UNHEALTHY else 200
        match self.negotiate(request):
            case "html":
                return self.render_to_response(self.get_context_data(**kwargs), status=status_code)
            case "text":
                return self.render_to_response_text(status_code)
            case "atom":
                return self.render_to_response_atom()
            case "rss":
                return self.render_to_response_rss()
            case "openmetrics":
                return self.render_to_response_openmetrics()
            case _:
                return self.render_to_response_json(status_code)

    def negotiate(self, request: HttpRequest) -> str:
        """The output format: ``?format=``, else the first Accept type we know, else JSON."""
        requested = request.GET.get("format")
        if requested in FORMATS:
            return requested
        try:
            for media in MediaType.parse_header(request.headers.get("accept") or "*/*"):
                if media.mime_type in MEDIA_FORMATS:
                    return MEDIA_FORMATS[media.mime_type]
        except ValueError:
            pass  # a malformed Accept header: JSON, like no header
        return "json"

    def render_to_response_json(self, status: int) -> JsonResponse:
        checks: dict[str, dict[str, Any]] = {}
        for result in self.results:
            error = result.error
            checks[check_name(result.check)] = {
                "status": result_status(result).value,
                "message": error.message if error else (getattr(result.check, "detail", "") or "OK"),
                "time_taken": round(result.time_taken, 3),
            }
        for name, reason in self.skipped.items():
            checks[name] = {"status": Status.SKIPPED.value, "message": reason}
        return JsonResponse({"status": self.status.value, "checks": checks}, status=status)
