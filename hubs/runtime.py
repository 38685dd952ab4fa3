"""``Runtime``: the process's shared machinery, owned in one place.

Per event loop (``LoopRuntime``, made on first use by the loop that serves connections or runs
sync sends): the routers of the channel layers (``hubs.fanout``), the presence of the loop's
connections (``hubs.presence``), the ack batcher (``hubs.delivery.ack_batch``), admission control
(``hubs.admission``), the keep-alive of its connections (``hubs.keepalive``), the rate limiter
(``hubs.rate_limit``) and the loop's background runners (the embedded retry pass, and those an
app starts, such as the monitoring app's stale cleanup).

Per process: the stores (pending acks, memberships, histories, negotiated connections, and those
an app registers, such as the connection monitor), each built on first use from the settings and
built again when those settings change, the circuit breakers, and the users resolved a moment
ago (``hubs.auth.users``).

``runtime()`` is the one instance. ``runtime().reset()`` forgets all of it (tests, between
tests); ``runtime().swap_store(name, store)`` puts a store of the test's own in place until the
next reset, and ``runtime().loop().swap_limiter(limiter)`` a limiter;
``runtime().autostart_runners = False`` keeps runners from starting on their own (tests run
retry passes themselves). On ``setting_changed`` for ``CONDUIT_RT`` the parts made from settings
(stores, limiter, filters, breakers) are made again on next use, while live connections keep
their routers.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from . import connections
from .admission import Admission
from .auth.user_batches import UserBatches
from .auth.users import RecentUsers
from .delivery import breaker, history, members, pending
from .delivery.ack_batch import AckBatcher
from .delivery.built import BuiltOnUse
from .fanout import LocalRouter
from .filters import reset_filters
from .keepalive import KeepAliveSchedule
from .presence import LocalConnections
from .rate_limit import InvocationLimiter, limiter_key

logger = logging.getLogger(__name__)


class LoopRuntime:
    """What one event loop owns."""

    def __init__(self, owner: Runtime) -> None:
        self._owner = owner
        self._routers: dict[str, LocalRouter] = {}
        #: The loop's connections and their renewal task (``hubs.presence``).
        self.connections = LocalConnections()
        #: The loop's batch of acknowledgements (``hubs.delivery.ack_batch``).
        self.ack_batcher = AckBatcher()
        #: The loop's admission control (``hubs.admission``).
        self.admission = Admission(open_connections=lambda: len(self.connections.connections))
        #: The keep-alive of the loop's connections (``hubs.keepalive``).
        self.keep_alive = KeepAliveSchedule()
        #: Per two-step validator that loads many users at once, the loop's batches of loads
        #: (``hubs.auth.user_batches``), by ``id(validator)``.
        self.user_batches: dict[int, UserBatches] = {}
        self._limiter: tuple[tuple[Any, ...], InvocationLimiter] | None = None
        self._swapped_limiter: Any = None
        self._runners: dict[str, asyncio.Task[None]] = {}

    def router(self, layer_alias: str = "default") -> LocalRouter:
        """The loop's router for the channel layer ``layer_alias``."""
        found = self._routers.get(layer_alias)
        if found is None:
            found = self._routers[layer_alias] = LocalRouter(layer_alias)
        return found

    def limiter(self) -> InvocationLimiter | None:
        """The limiter for the current ``RATE_LIMIT`` settings; None when the limit is off."""
        if self._swapped_limiter is not None:
            return self._swapped_limiter
        key = limiter_key()
        if key is None:
            return None
        if self._limiter is None or self._limiter[0] != key:
            self._limiter = (key, InvocationLimiter(*key))
        return self._limiter[1]

    def swap_limiter(self, limiter: Any) -> None:
        """Use ``limiter`` (an object with ``InvocationLimiter.try_acquire``) on this loop until
        the next reset, whatever the settings (tests)."""
        self._swapped_limiter = limiter

    def ensure_runner(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start the runner ``name`` (``run()``, a loop that never returns) on this loop unless
        it runs already; False when runners do not start on their own (tests)."""
        if not self._owner.autostart_runners:
            return False
        task = self._runners.get(name)
        if task is None or task.done():
            self._runners[name] = asyncio.get_running_loop().create_task(run(), name=f"conduit-{name}")
        return True

    def runner_names(self) -> list[str]:
        """The runners running on this loop."""
        return sorted(name for name, task in self._runners.items() if not task.done())

    def stop_runners(self) -> None:
        """Cancel the loop's runners (its loop must still run)."""
        for task in self._runners.values():
            task.cancel()
        self._runners.clear()


class Runtime:
    """The process's runtime: a ``LoopRuntime`` per running loop, and the stores."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopRuntime] = (
            weakref.WeakKeyDictionary()
        )
        self._stores: dict[str, BuiltOnUse[Any]] = {
            "pending": pending.get_pending,
            "members": members.get_members,
            "history": history.get_history,
            "negotiated": connections.get_negotiated,
        }
        #: Whether runners start with the first connection of a loop (tests turn it off).
        self.autostart_runners = True
        #: Users resolved a moment ago (``hubs.auth.users``, ``USER_CACHE_TTL``).
        self.recent_users = RecentUsers()

    def loop(self) -> LoopRuntime:
        """The running loop's part."""
        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        if found is None:
            found = self._loops[loop] = LoopRuntime(self)
        return found

    # ----------------------------------------------------------------------------- stores

    def register_store(self, name: str, store: BuiltOnUse[Any]) -> None:
        """Make an app's store known by ``name`` (the monitoring app registers ``monitor``)."""
        self._stores[name] = store

    def store_names(self) -> list[str]:
        return sorted(self._stores)

    def swap_store(self, name: str, store: Any) -> None:
        """Use ``store`` as the store ``name`` until the next ``reset`` (tests)."""
        try:
            built = self._stores[name]
        except KeyError:
            raise KeyError(f"No store {name!r}; known: {', '.join(self.store_names())}.") from None
        built.swap(store)

    # ----------------------------------------------------------------------------- resets

    def reset(self) -> None:
        """Forget every part: the next use builds each again from the settings in force. Runners
        of a loop that still runs are cancelled."""
        for loop, part in list(self._loops.items()):
            if not loop.is_closed():
                loop.call_soon_threadsafe(part.stop_runners)
        self._loops = weakref.WeakKeyDictionary()
        for store in self._stores.values():
            store.reset()
        self.recent_users.clear()
        self.settings_changed()

    def settings_changed(self) -> None:
        """What is made from settings is made again on next use (stores rebuild by their own
        key; limiters by theirs)."""
        breaker.reset_breakers()
        reset_filters()


_runtime = Runtime()


def runtime() -> Runtime:
    """The process's runtime."""
    return _runtime


def local_router(layer_alias: str = "default") -> LocalRouter:
    """The running loop's router for the channel layer ``layer_alias``."""
    return _runtime.loop().router(layer_alias)


def local_connections() -> LocalConnections:
    """The running loop's connections (``hubs.presence``)."""
    return _runtime.loop().connections


def local_admission() -> Admission:
    """The running loop's admission control (``hubs.admission``)."""
    return _runtime.loop().admission


def local_keep_alive() -> KeepAliveSchedule:
    """The running loop's keep-alive schedule (``hubs.keepalive``)."""
    return _runtime.loop().keep_alive


def ack_batcher() -> AckBatcher:
    """The running loop's ack batcher."""
    return _runtime.loop().ack_batcher


def get_limiter() -> InvocationLimiter | None:
    """The running loop's rate limiter; None when ``RATE_LIMIT`` is off."""
    return _runtime.loop().limiter()


def on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver, connected in ``HubsConfig.ready``."""
    from .conf import SETTING_NAME

    if setting == SETTING_NAME:
        _runtime.settings_changed()
