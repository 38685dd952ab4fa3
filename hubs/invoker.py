"""``Invoker``: runs the invocations of one connection.

Binding (the allowlist, argument counts), the queue of waiting invocations and its worker (one at
a time per connection, so hub code never blocks the receive loop or deliveries), the rate limit,
the filter pipeline (``hubs.filters``), streams and their cancellation, and the Completion each
invocation gets. Acks and nacks run as they arrive, never behind a running invocation.

Owned by the ``Hub``; it calls the hub's methods by the names ``@hub_method`` registered, never
anything else of the hub. No exception from a client's bytes ends the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from channels.db import database_sync_to_async

from . import client_errors
from .conf import conduit_settings
from .errors import HubError, UnexpectedError
from .filters import HubInvocation, get_chain
from .methods import MethodSpec
from .metrics import hub_metrics
from .payloads import to_wire
from .protocol import CompletionMessage, InvocationMessage, StreamInvocationMessage, StreamItemMessage
from .rate_limit import client_key
from .runtime import get_limiter
from .session import ProtocolSession

logger = logging.getLogger(__name__)

#: Hub methods handled as they arrive instead of waiting in the invocation queue.
INLINE_METHODS = frozenset({"acknowledgemessage", "acknowledgemessages", "nackmessage"})

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class Invoker:
    """The invocations of one connection of ``hub`` (a ``Hub``: its ``context``, its methods)."""

    __slots__ = (
        "_client_cancelled",
        "_hub",
        "_hub_name",
        "_methods",
        "_queue",
        "_session",
        "_spawn",
        "_started",
        "_streams",
        "_working",
    )

    def __init__(self, hub: Any, session: ProtocolSession, spawn: Spawn) -> None:
        self._hub = hub
        self._session = session
        self._spawn = spawn
        self._hub_name: str = hub.get_hub_name()
        self._methods: dict[str, MethodSpec] = type(hub)._methods
        self._started = False
        # Invocations waiting for the worker; made with the first, dropped when the worker has
        # run them all (an empty deque is about 600 bytes; an asyncio.Queue four of them).
        self._queue: deque[InvocationMessage] | None = None
        self._streams: dict[str, asyncio.Task[Any]] = {}
        self._client_cancelled: set[str] | None = None  # made by the first CancelInvocation
        self._working = False  # a worker task runs the queue

    def start(self) -> None:
        """Take invocations from now on (once the handshake succeeded and
        ``on_connection_established`` ran); a worker task runs while invocations wait, so an
        idle connection costs no task and no queue."""
        self._started = True

    async def handle(self, msg: InvocationMessage | StreamInvocationMessage) -> None:
        """An invocation or stream invocation from the client."""
        if isinstance(msg, StreamInvocationMessage):
            await self._start_stream(msg)
            return
        assert self._started
        if msg.target.lower() in INLINE_METHODS:
            await self._invoke(msg)
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= conduit_settings.MAX_PENDING_INVOCATIONS:
            hub_metrics().rate_limited.labels(hub=self._hub_name, outcome="refused").inc()
            await self.complete(msg, error=client_errors.too_many_pending(msg.target))
            return
        queue.append(msg)
        if not self._working:
            self._working = True
            self._spawn(self._worker())

    def cancel(self, invocation_id: str) -> None:
        """The client's ``CancelInvocation`` of a stream (unknown ids are ignored)."""
        task = self._streams.get(invocation_id)
        if task is not None:
            if self._client_cancelled is None:
                self._client_cancelled = set()
            self._client_cancelled.add(invocation_id)
            task.cancel()

    async def complete(self, msg: InvocationMessage, *, error: str | None) -> None:
        """Answer ``msg`` with an error Completion (nothing for a non-blocking invocation)."""
        if msg.invocation_id and not self._session.closed:
            await self._session.write(
                CompletionMessage.with_error(msg.invocation_id, error or "Invocation failed.")
            )

    # ----------------------------------------------------------------------------- the queue

    async def _worker(self) -> None:
        """Run the queued invocations one by one, in order; end when none waits."""
        queue = self._queue
        assert queue is not None
        while queue:
            msg = queue.popleft()
            try:
                await self._within_rate_limit()
                await self._invoke(msg)
            except Exception:
                # Hub code's errors are answered in _invoke; this is what is left (e.g. an error
                # reply no protocol can encode, for an invocation id no UTF-8 can hold). Ending
                # the worker would leave an open socket that never answers again; this
                # invocation cannot be answered, so the connection is closed with an error
                # (and no worker starts again: what the client sends next is not run).
                logger.exception("%s: could not handle an invocation; closing.", self._hub_name)
                hub_metrics().errors.labels(where="invocation").inc()
                await self._session.close_with("Connection closed with an error.", allow_reconnect=True)
                return
        self._queue = None
        self._working = False

    async def _within_rate_limit(self) -> None:
        """Before each queued invocation runs: wait while the client is over ``RATE_LIMIT``
        (``hubs.rate_limit``). The invocations behind it wait in the queue meanwhile."""
        delayed = False
        while wait := await self._rate_limit_wait():
            if not delayed:
                delayed = True
                hub_metrics().rate_limited.labels(hub=self._hub_name, outcome="delayed").inc()
            await asyncio.sleep(wait)

    async def _rate_limit_wait(self) -> float:
        """One hit against ``RATE_LIMIT`` for this client: 0 when it is allowed (or the limit is
        off, or its storage failed: logged and counted), else the seconds to wait first."""
        context = self._hub.context
        key = client_key(self._hub.get_group_namespace(), context.user_id, context.connection_id)
        try:
            limiter = get_limiter()
            return 0.0 if limiter is None else await limiter.try_acquire(*key)
        except Exception:  # a bad setting or a failed storage: serve rather than stall every client
            logger.exception("%s: rate limit unavailable; invocation allowed.", self._hub_name)
            hub_metrics().errors.labels(where="rate_limit").inc()
            return 0.0

    # ----------------------------------------------------------------------------- invoking

    def _bind(self, msg: InvocationMessage) -> tuple[MethodSpec | None, str | None]:
        """The method an invocation names, or the error the client gets instead."""
        target = msg.target
        spec = self._methods.get(target.lower())
        if spec is None:
            return None, client_errors.method_missing(target)
        if spec.streaming != isinstance(msg, StreamInvocationMessage):
            return None, client_errors.streaming_mismatch(target, method_streams=spec.streaming)
        if msg.stream_ids:
            return None, client_errors.uploads_unsupported(target)
        if not spec.accepts(len(msg.arguments)):
            return None, client_errors.wrong_argument_count(target, len(msg.arguments), spec.expected())
        return spec, None

    async def _invoke(self, msg: InvocationMessage) -> None:
        hub = self._hub_name
        spec, error = self._bind(msg)
        if spec is None:
            hub_metrics().invocations.labels(hub=hub, method="unknown", outcome="rejected").inc()
            await self.complete(msg, error=error)
            return
        started = time.perf_counter()
        try:
            chain = get_chain()  # HUB_FILTERS composed once per process; None without filters
            if chain is not None:
                result = await chain(self._invocation(msg, spec))
            elif spec.is_async:
                result = await getattr(self._hub, spec.attribute)(*msg.arguments)
            else:
                result = await database_sync_to_async(getattr(self._hub, spec.attribute))(*msg.arguments)
        except UnexpectedError as exc:  # a filter logged it under an error id: no second log line
            _count(hub, spec.wire_name, "error", started)
            error = client_errors.invocation_failed(
                msg.target, detail=_cause_detail(exc), error_id=exc.error_id
            )
            await self.complete(msg, error=error)
            return
        except HubError as exc:
            _count(hub, spec.wire_name, "hub_error", started)
            await self.complete(msg, error=client_errors.invocation_failed(msg.target, hub_error=exc.message))
            return
        except Exception as exc:
            logger.exception("%s: hub method %s raised.", hub, spec.wire_name)
            _count(hub, spec.wire_name, "error", started)
            await self.complete(msg, error=client_errors.invocation_failed(msg.target, detail=_detail(exc)))
            return
        if msg.invocation_id:
            try:
                await self._session.write(CompletionMessage.with_result(msg.invocation_id, to_wire(result)))
            except Exception as exc:  # the result cannot be sent, e.g. a string no UTF-8 can hold
                logger.exception("%s: the result of %s cannot be sent.", hub, spec.wire_name)
                hub_metrics().errors.labels(where="invocation_result").inc()
                _count(hub, spec.wire_name, "error", started)
                await self.complete(
                    msg, error=client_errors.invocation_failed(msg.target, detail=_detail(exc))
                )
                return
        _count(hub, spec.wire_name, "ok", started)

    def _invocation(
        self, msg: InvocationMessage | StreamInvocationMessage, spec: MethodSpec
    ) -> HubInvocation:
        """What the filters see of an invocation (``hubs.filters``)."""
        return HubInvocation(
            self._hub,
            self._hub_name,
            self._hub.context,
            spec.wire_name,
            msg.arguments,
            msg.invocation_id,
            spec,
            msg.headers,
            spec.streaming,
        )

    # ----------------------------------------------------------------------------- streams

    async def _start_stream(self, msg: StreamInvocationMessage) -> None:
        if msg.invocation_id in self._streams:
            await self.complete(msg, error=client_errors.duplicate_invocation_id(msg.invocation_id))
            return
        spec, error = self._bind(msg)
        if spec is None:
            hub_metrics().invocations.labels(hub=self._hub_name, method="unknown", outcome="rejected").inc()
            await self.complete(msg, error=error)
            return
        if not await self._stream_allowed(msg):
            return
        self._streams[msg.invocation_id] = self._spawn(self._run_stream(msg, spec))

    async def _stream_allowed(self, msg: StreamInvocationMessage) -> bool:
        """A stream counts as one invocation; over the limit it is refused (it has no queue)."""
        wait = await self._rate_limit_wait()
        if not wait:
            return True
        hub_metrics().rate_limited.labels(hub=self._hub_name, outcome="stream_refused").inc()
        await self.complete(msg, error=client_errors.rate_limited(msg.target, wait))
        return False

    async def _run_stream(self, msg: StreamInvocationMessage, spec: MethodSpec) -> None:
        invocation_id, hub, write = msg.invocation_id, self._hub_name, self._session.write
        outcome = "ok"
        started = time.perf_counter()
        try:
            chain = get_chain()  # filters wrap the call that makes the stream (and may wrap it)
            if chain is None:
                stream = getattr(self._hub, spec.attribute)(*msg.arguments)
            else:
                stream = await chain(self._invocation(msg, spec))
            try:
                async for item in stream:
                    await write(StreamItemMessage(invocation_id, to_wire(item)))
            finally:
                aclose = getattr(stream, "aclose", None)  # a filter's wrapper may be a plain iterator
                if aclose is not None:
                    await aclose()
            await write(CompletionMessage.empty(invocation_id))
        except asyncio.CancelledError:
            if not self._client_cancelled or invocation_id not in self._client_cancelled:
                raise  # the connection is going away: nothing more to send
            # The client cancelled: not an error, but the invocation still gets its Completion.
            await write(CompletionMessage.empty(invocation_id))
        except UnexpectedError as exc:  # a filter logged it under an error id: no second log line
            outcome = "error"
            error = client_errors.stream_failed(detail=_cause_detail(exc), error_id=exc.error_id)
            await write(CompletionMessage.with_error(invocation_id, error))
        except HubError as exc:
            outcome = "hub_error"
            await write(
                CompletionMessage.with_error(
                    invocation_id, client_errors.stream_failed(hub_error=exc.message)
                )
            )
        except Exception as exc:
            outcome = "error"
            logger.exception("%s: streaming hub method %s raised.", hub, spec.wire_name)
            error = client_errors.stream_failed(detail=_detail(exc))
            await write(CompletionMessage.with_error(invocation_id, error))
        finally:
            self._streams.pop(invocation_id, None)
            if self._client_cancelled:
                self._client_cancelled.discard(invocation_id)
            _count(hub, spec.wire_name, outcome, started)


def _count(hub: str, method: str, outcome: str, started: float) -> None:
    """Count a finished invocation and observe its duration since ``started``
    (``time.perf_counter``). Cached label children: this runs for every ack."""
    metrics = hub_metrics()
    metrics.child(metrics.invocations, hub, method, outcome).inc()
    metrics.child(metrics.invocation_duration, hub, method, outcome).observe(time.perf_counter() - started)


def _cause_detail(exc: UnexpectedError) -> str | None:
    """``_detail`` of the exception an ``UnexpectedError`` was raised from."""
    cause = exc.__cause__
    return _detail(cause) if isinstance(cause, Exception) else None


def _detail(exc: Exception) -> str | None:
    """Exception type and text for clients, only with ``ENABLE_DETAILED_ERRORS``."""
    if conduit_settings.ENABLE_DETAILED_ERRORS:
        return f"{type(exc).__name__}: {exc}"
    return None
