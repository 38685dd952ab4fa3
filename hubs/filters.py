"""Hub filters: a pipeline around every hub method invocation, like Django middleware around a view.

A filter is a class with ``async def invoke(self, invocation, call_next)`` (ASP.NET Core's
``IHubFilter.InvokeMethodAsync``). ``CONDUIT_RT["HUB_FILTERS"]`` lists them by dotted path,
outermost first. They are instantiated once per process and composed once into a chain; both are
built again on first use after ``CONDUIT_RT`` changes (``setting_changed``). With no filters the
hub calls its methods directly, without building a ``HubInvocation``.

A filter may read and replace ``invocation.arguments``, change or replace the result, or raise
``HubError`` to refuse the call (the caller gets the message as from a hub method). Streaming
methods go through the filters too: the chain wraps the call that *produces* the stream, so
``call_next`` returns the async iterator; a filter that wants to watch the items or the end of the
stream returns a wrapper around it (``hubs.diagnostics.DiagnosticFilter`` does).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured

from .conf import SETTING_NAME, conduit_settings

if TYPE_CHECKING:
    from .context import ConnectionContext
    from .methods import MethodSpec

#: The header in which a client may send its own correlation id with an invocation.
CORRELATION_HEADER = "correlationId"
#: What a client's correlation id must look like to be kept (it goes into log lines).
_CLIENT_CORRELATION = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")

CallNext = Callable[["HubInvocation"], Awaitable[Any]]


def new_correlation_id() -> str:
    """A fresh short id (12 hex digits) for an invocation the client gave none."""
    return secrets.token_hex(6)


@dataclass(slots=True, eq=False)
class HubInvocation:
    """One call of a hub method, as filters see it.

    ``method`` is the method's wire name as the hub declares it (``AcknowledgeMessage``, whatever
    case the client used). ``arguments`` may be replaced by a filter before it calls ``call_next``
    (their count was checked against the method before the filters ran). ``invocation_id`` is
    None for a call that wants no reply. ``streaming`` says whether ``call_next`` answers an async
    iterator of stream items instead of the method's result.
    """

    #: The ``Hub`` instance serving the connection (typed loosely: the pipeline never imports it).
    hub: Any
    hub_name: str
    context: ConnectionContext
    method: str
    arguments: list[Any]
    invocation_id: str | None
    spec: MethodSpec = field(repr=False)
    headers: Mapping[str, str] | None = None
    streaming: bool = False
    _correlation_id: str | None = field(default=None, repr=False)

    @property
    def connection_id(self) -> str:
        return self.context.connection_id

    @property
    def correlation_id(self) -> str:
        """The client's ``correlationId`` invocation header when it sent a usable one, else a fresh
        short id; made on first read (most calls are never logged) and the same afterwards."""
        found = self._correlation_id
        if found is None:
            sent = self.headers.get(CORRELATION_HEADER) if self.headers else None
            usable = sent is not None and _CLIENT_CORRELATION.fullmatch(sent) is not None
            found = self._correlation_id = sent if usable else new_correlation_id()
        return found


class HubFilter:
    """Base class of hub filters: override ``invoke``. One instance serves every connection of the
    process, concurrently: keep per-call state in locals or in ``invocation.context.items``."""

    async def invoke(self, invocation: HubInvocation, call_next: CallNext) -> Any:
        """Runs around each hub method invocation; ``await call_next(invocation)`` runs the rest of
        the chain and the method, and answers its result (for a stream: its async iterator)."""
        return await call_next(invocation)


def call_hub_method(invocation: HubInvocation) -> Awaitable[Any]:
    """The end of every chain: call the hub method with the invocation's arguments.

    Answers the awaitable to await: the coroutine of an ``async def`` method (no extra frame on
    the hot path), a ``database_sync_to_async`` call for a ``def`` method, and for a streaming
    method a coroutine that answers its async generator, unstarted (the hub iterates it).
    """
    spec = invocation.spec
    method = getattr(invocation.hub, spec.attribute)
    if spec.streaming:
        return _answer(method(*invocation.arguments))
    if spec.is_async:
        return method(*invocation.arguments)  # type: ignore[no-any-return]
    return database_sync_to_async(method)(*invocation.arguments)  # type: ignore[no-any-return]


async def _answer(value: Any) -> Any:
    return value


def build_chain(filters: Sequence[HubFilter], terminal: CallNext = call_hub_method) -> CallNext:
    """Compose ``filters`` (outermost first) around ``terminal`` into one callable.

    Each link is a plain function that returns the filter's coroutine, so a call through n filters
    costs n function calls and n coroutines, and no per-call closures.
    """
    chain = terminal
    for hub_filter in reversed(filters):
        chain = _link(hub_filter.invoke, chain)
    return chain


def _link(invoke: Callable[[HubInvocation, CallNext], Awaitable[Any]], call_next: CallNext) -> CallNext:
    def call(invocation: HubInvocation) -> Awaitable[Any]:
        return invoke(invocation, call_next)

    return call


class _Pipeline:
    """The process's filters and their chain, built on first use from ``HUB_FILTERS``.

    ``built`` is swapped as one reference, so a reader sees either nothing or a whole pipeline.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.built: tuple[tuple[HubFilter, ...], CallNext | None] | None = None

    def build(self) -> tuple[tuple[HubFilter, ...], CallNext | None]:
        with self._lock:
            if self.built is None:
                filters = tuple(_instantiate(entry) for entry in conduit_settings.HUB_FILTERS)
                self.built = (filters, build_chain(filters) if filters else None)
            return self.built


def _instantiate(entry: Any) -> HubFilter:
    if not isinstance(entry, type):
        raise ImproperlyConfigured(
            f"{SETTING_NAME}['HUB_FILTERS'] entries must be classes (or dotted paths to them), got {entry!r}."
        )
    instance = entry()
    if not callable(getattr(instance, "invoke", None)):
        raise ImproperlyConfigured(
            f"{SETTING_NAME}['HUB_FILTERS']: {entry.__module__}.{entry.__qualname__} has no "
            "invoke(invocation, call_next) method."
        )
    return instance


_pipeline = _Pipeline()


def get_chain() -> CallNext | None:
    """The composed filter chain, or None when ``HUB_FILTERS`` is empty (call methods directly)."""
    built = _pipeline.built
    if built is None:
        built = _pipeline.build()
    return built[1]


def get_filters() -> tuple[HubFilter, ...]:
    """The process's filter instances, outermost first."""
    built = _pipeline.built
    if built is None:
        built = _pipeline.build()
    return built[0]


def reset_filters(*, setting: str = SETTING_NAME, **kwargs: Any) -> None:
    """Forget the filters and their chain; the next invocation builds them from the settings.

    Connected to ``setting_changed`` (as Channels' layer manager and DRF's settings connect
    theirs on import): ``override_settings(CONDUIT_RT=...)`` takes effect on the next call.
    """
    if setting == SETTING_NAME:
        _pipeline.built = None
