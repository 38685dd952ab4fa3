"""A TCP proxy on loopback that cuts client connections on command, for fault tests.

Clients connect to the proxy's port; each connection is piped to the upstream port (daphne). The
test calls ``cut(n)`` to abort ``n`` live connections at random, both ways at once, as a
network failure would (the client sees an abnormal close, the server a dropped socket). The
proxy runs its own event loop in a thread, so the synchronous e2e tests drive it directly.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

from .harness import free_port


class ChaosProxy:
    """``127.0.0.1:<port>`` → ``127.0.0.1:<upstream>``, with ``cut``."""

    def __init__(self, upstream: int, *, seed: int = 0) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.cuts = 0
        self._random = random.Random(seed)
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True, name="chaos-proxy")
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the chaos proxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            started.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.upstream), timeout=5
            )
        except (OSError, TimeoutError):
            writer.transport.abort()  # upstream down: the client sees a refused connection
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    def _run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def live(self) -> int:
        """Connections open through the proxy now."""

        async def count() -> int:
            return len(self._pairs)

        return int(self._run(count()))

    def cut(self, count: int) -> int:
        """Abort up to ``count`` live connections chosen at random; returns how many."""

        async def cut() -> int:
            pairs = sorted(self._pairs, key=id)
            chosen = self._random.sample(pairs, min(count, len(pairs)))
            for client_side, upstream_side in chosen:
                client_side.transport.abort()
                upstream_side.transport.abort()
            return len(chosen)

        done = int(self._run(cut()))
        self.cuts += done
        return done

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for client_side, upstream_side in list(self._pairs):
                client_side.transport.abort()
                upstream_side.transport.abort()

        try:
            self._run(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
