"""Per-group streams: a sequence number for every group message and a bounded history for resume.

Each group's stream has an ``epoch`` (a random id, new whenever the stream's state is lost or
starts over) and a ``seq`` counting its messages from 1. A client that reconnects asks for what
came after the last ``(epoch, seq)`` it saw; ``read_after`` answers the missed entries, in order,
or None when they are no longer all there (another epoch, or older than the window), and the client
then needs a snapshot instead.

Two backends with one contract: ``MemoryHistory`` (one process: the embedded mode) and
``RedisHistory`` (Redis Streams, shared by every process: production). Chosen by
``HISTORY_BACKEND``; built on first use by ``get_history()``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..conf import conduit_settings
from ..protocol.json_protocol import dumps_json
from .built import BuiltOnUse
from .redis import PerLoopRedis


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream stands: its epoch and the seq of its last message."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One message kept in a stream's history (the body without ``seq``/``epoch``).

    Redis keeps bodies as JSON, so ``datetime`` values inside a payload come back from Redis as
    ISO strings (MessagePack clients get strings on replay, timestamps live).
    """

    seq: int
    message_id: str
    method: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Replay:
    """What ``read_after`` found: the current position (None for an unknown stream) and the
    missed entries (None when they are not all kept any more: the caller needs a snapshot)."""

    position: Position | None
    entries: list[StreamEntry] | None

    @property
    def recovered(self) -> bool:
        return self.entries is not None


class History(Protocol):
    """The contract both backends keep."""

    async def append(self, stream: str, message_id: str, method: str, body: dict[str, Any]) -> Position:
        """Give the message the stream's next seq and keep it; atomic across processes."""
        ...

    async def read_after(self, stream: str, epoch: str | None, seq: int) -> Replay:
        """The stream's position, and its entries after ``seq`` of ``epoch`` in order (None if not
        all of them are still kept)."""
        ...

    async def position(self, stream: str) -> Position | None:
        """The stream's current position, None if it has none (never used, or expired)."""
        ...


def new_epoch() -> str:
    return secrets.token_hex(4)


def missed(
    entries: list[StreamEntry], current: Position, epoch: str | None, seq: int
) -> list[StreamEntry] | None:
    """The gap check both backends share: entries after ``seq`` if the history covers all of them."""
    if epoch is not None and epoch != current.epoch:
        return None
    if seq > current.seq or seq < 0:
        return None
    if seq == current.seq:
        return []
    after = [e for e in entries if e.seq > seq]
    if not after or after[0].seq != seq + 1:
        return None
    return after


#: A stream that received nothing for this long is forgotten (Redis: the keys' TTL).
IDLE_STREAM_TTL = 86400.0
#: How often ``MemoryHistory`` looks for such streams.
IDLE_SWEEP_INTERVAL = 3600.0


class MemoryHistory:
    """History in this process's memory (the embedded mode: one server process)."""

    def __init__(
        self,
        *,
        max_length: int | None = None,
        max_age: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_length = max_length or conduit_settings.HISTORY_MAX_LENGTH
        self.max_age = max_age if max_age is not None else conduit_settings.HISTORY_MAX_AGE
        self._clock = clock
        self._lock = threading.Lock()  # appends may come from several threads (sync senders)
        self._streams: dict[str, tuple[Position, deque[tuple[float, StreamEntry]]]] = {}
        self._last_sweep = clock()

    async def append(self, stream: str, message_id: str, method: str, body: dict[str, Any]) -> Position:
        now = self._clock()
        with self._lock:
            current, entries = self._streams.get(stream) or (Position(new_epoch(), 0), deque())
            position = Position(current.epoch, current.seq + 1)
            entries.append((now, StreamEntry(position.seq, message_id, method, body)))
            self._trim(entries, now)
            self._streams[stream] = (position, entries)
            self._forget_idle(now)
            return position

    async def read_after(self, stream: str, epoch: str | None, seq: int) -> Replay:
        with self._lock:
            found = self._streams.get(stream)
            if found is None:
                return Replay(None, None)
            current, entries = found
            self._trim(entries, self._clock())
            return Replay(current, missed([e for _, e in entries], current, epoch, seq))

    async def position(self, stream: str) -> Position | None:
        with self._lock:
            found = self._streams.get(stream)
            return found[0] if found else None

    def _trim(self, entries: deque[tuple[float, StreamEntry]], now: float) -> None:
        while entries and (len(entries) > self.max_length or now - entries[0][0] > self.max_age):
            entries.popleft()

    def _forget_idle(self, now: float) -> None:
        # A stream idle for IDLE_STREAM_TTL is dropped whole (its next message starts a new epoch,
        # as when its Redis keys expire), so memory does not grow with every group that ever
        # existed. The sweep walks every stream, so it runs at most once per IDLE_SWEEP_INTERVAL.
        if now - self._last_sweep < IDLE_SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for name, (_, entries) in list(self._streams.items()):
            if not entries or now - entries[-1][0] > IDLE_STREAM_TTL:
                del self._streams[name]


# KEYS: meta hash, stream. ARGV: new epoch, max length, max age ms, ttl ms, id, method, body.
_APPEND = """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if seq == 1 or not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 1)
  seq = 1
  redis.call('DEL', KEYS[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '*',
           'seq', seq, 'id', ARGV[5], 'm', ARGV[6], 'b', ARGV[7])
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3])
redis.call('XTRIM', KEYS[2], 'MINID', cutoff)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {epoch, seq}
"""

# KEYS: meta hash, stream. ARGV: max age ms, the reader's seq. Returns epoch, seq, then the
# entries after the reader's seq still kept (at most current - seq of them, oldest first): a
# reader one message behind reads one entry, not the whole window.
_READ = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not meta[1] then return nil end
local wanted = tonumber(meta[2]) - tonumber(ARGV[2])
if wanted <= 0 then return {meta[1], meta[2], {}} end
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
local newest = redis.call('XREVRANGE', KEYS[2], '+', cutoff, 'COUNT', wanted)
local entries = {}
for i = #newest, 1, -1 do entries[#entries + 1] = newest[i] end
return {meta[1], meta[2], entries}
"""


class RedisHistory:
    """History in Redis: a Stream per group (``XADD MAXLEN``, exact, and age-trimmed) plus a small hash
    holding the epoch and the seq counter, both updated by one script so seqs never repeat."""

    def __init__(
        self,
        *,
        url: str | None = None,
        max_length: int | None = None,
        max_age: float | None = None,
        ttl: float = IDLE_STREAM_TTL,
    ) -> None:
        self.url = url or conduit_settings.REDIS_URL
        if not self.url:
            raise ValueError("RedisHistory needs CONDUIT_RT['REDIS_URL'].")
        self.max_length = max_length or conduit_settings.HISTORY_MAX_LENGTH
        self.max_age = max_age if max_age is not None else conduit_settings.HISTORY_MAX_AGE
        self.ttl = max(ttl, self.max_age * 2)
        self.prefix = f"{conduit_settings.KEY_PREFIX}:stream:"
        self.redis = PerLoopRedis(self.url)

    def _keys(self, stream: str) -> list[str]:
        return [f"{self.prefix}{stream}:meta", f"{self.prefix}{stream}"]

    async def append(self, stream: str, message_id: str, method: str, body: dict[str, Any]) -> Position:
        epoch, seq = await self.redis.client().eval(
            _APPEND,
            2,
            *self._keys(stream),
            new_epoch(),
            self.max_length,
            int(self.max_age * 1000),
            int(self.ttl * 1000),
            message_id,
            method,
            dumps_json(body),
        )
        return Position(epoch.decode() if isinstance(epoch, bytes) else str(epoch), int(seq))

    async def read_after(self, stream: str, epoch: str | None, seq: int) -> Replay:
        found = await self.redis.client().eval(
            _READ, 2, *self._keys(stream), int(self.max_age * 1000), max(0, int(seq))
        )
        if not found:
            return Replay(None, None)
        current = Position(found[0].decode(), int(found[1]))
        entries = []
        for _stream_id, raw in found[2]:
            fields = {raw[i].decode(): raw[i + 1] for i in range(0, len(raw), 2)}
            entries.append(
                StreamEntry(
                    int(fields["seq"]), fields["id"].decode(), fields["m"].decode(), json.loads(fields["b"])
                )
            )
        return Replay(current, missed(entries, current, epoch, seq))

    async def position(self, stream: str) -> Position | None:
        epoch, seq = await self.redis.client().hmget(self._keys(stream)[0], "epoch", "seq")
        if epoch is None or seq is None:
            return None
        return Position(epoch.decode(), int(seq))


def _history_key() -> tuple[Any, ...]:
    return (
        conduit_settings.HISTORY_BACKEND,
        conduit_settings.REDIS_URL,
        conduit_settings.HISTORY_MAX_LENGTH,
        conduit_settings.HISTORY_MAX_AGE,
        conduit_settings.KEY_PREFIX,
    )


#: ``get_history()``: the configured history backend (``HISTORY_BACKEND``).
get_history: BuiltOnUse[History] = BuiltOnUse(_history_key, lambda: conduit_settings.HISTORY_BACKEND())
