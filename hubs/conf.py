"""The one settings object, ``conduit_settings``: ``settings.CONDUIT_RT`` over documented defaults.

Read lazily on first attribute access, never at import time, and reset when Django's
``setting_changed`` signal fires (``override_settings`` in tests). Unknown keys fail loudly.
Dotted-path values listed in ``IMPORT_STRINGS`` are imported on access.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

SETTING_NAME = "CONDUIT_RT"
ENV_PREFIX = "CONDUIT_RT_"

DEFAULTS: dict[str, Any] = {
    # --- Protocol and timers (seconds) -------------------------------------------------------
    # A Ping goes out whenever nothing was sent for this long; keep it under half the clients'
    # server timeout (30 s by default in the official clients).
    "KEEP_ALIVE_INTERVAL": 15.0,
    # A client that sent nothing for this long (counted from its first Ping) is closed.
    "CLIENT_TIMEOUT": 30.0,
    # A connection that sends no complete handshake in this time is closed with an error.
    "HANDSHAKE_TIMEOUT": 15.0,
    # A negotiated connection token that no WebSocket claims within this time expires.
    "NEGOTIATE_TIMEOUT": 15.0,
    # Largest hub message (one record, not one frame) a client may send, in bytes.
    "MAX_MESSAGE_SIZE": 512 * 1024,
    # Append exception types and texts to error completions sent to clients.
    "ENABLE_DETAILED_ERRORS": False,
    # Invocations queued per connection while one runs; more are refused with an error.
    "MAX_PENDING_INVOCATIONS": 50,
    # Hub invocations a client may make, in the `limits` library's notation ("100/minute",
    # "10/second"); over it they wait in the queue above. Counted in Redis when REDIS_URL is set
    # (every process sees the same count). "" turns it off. Acks and nacks are not counted.
    "RATE_LIMIT": "100/minute",
    # Who a client is for RATE_LIMIT: "connection", or "user" (all of a user's connections on all
    # servers share one count; anonymous connections count alone).
    "RATE_LIMIT_SCOPE": "connection",
    # The `limits` strategy: "moving-window", "fixed-window" or "sliding-window-counter".
    "RATE_LIMIT_STRATEGY": "moving-window",
    # --- Admission control (docs/operations.md) -------------------------------------------------
    # Connection attempts (negotiates, and WebSockets without one) each server process takes per
    # second, and how many it takes at once above that rate; 0 = no limit.
    "CONNECT_RATE": 200.0,
    "CONNECT_BURST": 200,
    # Open connections per server process (0 = no limit).
    "MAX_CONNECTIONS": 25000,
    # Open connections of one user per hub namespace, over all server processes (0 = no limit).
    "MAX_CONNECTIONS_PER_USER": 100,
    # Bytes a connection's client may leave unread (queued by the hub and held by the server's
    # transport) before it is closed as a slow consumer; 0 = no bound.
    "OUTBOUND_QUEUE_BYTES": 1024 * 1024,
    # --- Payloads ------------------------------------------------------------------------------
    # Leave keys whose value is None out of server message payloads.
    "OMIT_NULLS": True,
    # --- Security ------------------------------------------------------------------------------
    # Browser origins allowed besides the host the request was made to ("*" allows any).
    # Clients that send no Origin header (Node, Python, .NET services) are always accepted.
    "ALLOWED_ORIGINS": [],
    # Callables that take a token string and return a user or None, tried in order.
    "TOKEN_VALIDATORS": ["hubs.auth.tokens.validate_signed_token"],
    # Lifetime of tokens made by issue_token() when no ttl is given.
    "TOKEN_TTL": 3600,
    # Salt of the signed tokens; changing it invalidates every token issued.
    "TOKEN_SALT": "conduit_rt.access_token",
    # Seconds a process keeps a user it loaded for a token or a session (0: never): a connect
    # storm then costs no database query per client. A user made inactive, deleted or logged
    # out is refused at most this long after the change.
    "USER_CACHE_TTL": 30.0,
    # --- Streams and history ---------------------------------------------------------------------
    # Where each group's recent messages are kept for resume: an in-memory store (one process,
    # the embedded mode) or Redis Streams (shared; needs REDIS_URL).
    "HISTORY_BACKEND": "hubs.delivery.history.MemoryHistory",
    # Each group keeps at least this many recent messages ...
    "HISTORY_MAX_LENGTH": 1000,
    # ... and none older than this many seconds.
    "HISTORY_MAX_AGE": 300.0,
    # Redis used by Conduit RT's own state (history); None in the embedded mode.
    "REDIS_URL": None,
    # --- Acknowledged delivery (docs/delivery.md) ------------------------------------------------
    # Events sent acknowledged when the sender does not say (``asend(..., ack=None)``).
    "ACK_EVENTS": [],
    # Seconds a recipient has to acknowledge an attempt before it counts as failed.
    "ACK_TIMEOUT": 10.0,
    # Retries after the first attempt; then the message becomes a dead letter (Celery's name).
    "MAX_RETRIES": 5,
    # Backoff before retry n+1: min(RETRY_BACKOFF_MAX, RETRY_BACKOFF * 2**n) seconds, on top of
    # the ack timeout, with full jitter (a uniform draw from 0 to that) when RETRY_JITTER is on.
    "RETRY_BACKOFF": 1.0,
    "RETRY_BACKOFF_MAX": 60.0,
    "RETRY_JITTER": True,
    # What a NackMessage does: "retry" (counts as a failed attempt and retries at once) or
    # "dead_letter" (the message becomes a dead letter for that recipient at once).
    "NACK_POLICY": "retry",
    # Who runs retries: "embedded" (a loop in each server process) or "celery" (the beat task
    # hubs.deliver_due on a worker). Exactly one layer retries; never both.
    "RETRY_RUNNER": "embedded",
    # Seconds between two retry passes, and the most entries one pass handles.
    "RETRY_INTERVAL": 1.0,
    "RETRY_BATCH_SIZE": 500,
    # Acknowledged messages are kept this many seconds (longer than any retry schedule) ...
    "MESSAGE_RETENTION": 86400.0,
    # ... and dead letters this many seconds, by the retention task.
    "DEAD_LETTER_RETENTION": 7 * 86400.0,
    # Seconds a connection counts as present without its server renewing its lease (renewed
    # every third of it); a server that died loses its connections after this long.
    "PRESENCE_TTL": 30.0,
    # --- Monitoring (docs/monitoring.md) -----------------------------------------------------------
    # A connection that exchanged no hub message (pings do not count) for this many seconds is
    # stale: the cleanup closes its socket.
    "STALE_THRESHOLD": 3600.0,
    # Seconds between two stale-connection cleanups.
    "STALE_CLEANUP_INTERVAL": 60.0,
    # Who runs the cleanup: "embedded" (a loop in each server process) or "celery" (the beat
    # task monitoring.cleanup_stale_connections on a worker).
    "CLEANUP_RUNNER": "embedded",
    # Hub filters, outermost first (dotted paths to classes): each wraps every hub method
    # invocation, like middleware wraps a view.
    "HUB_FILTERS": ["hubs.diagnostics.DiagnosticFilter"],
    # /health/ reports degraded when stale connections exceed this share of the active ones ...
    "HEALTH_STALE_RATIO": 0.10,
    # ... or when more than this many dead letters were created in the last
    # HEALTH_DEAD_LETTER_WINDOW seconds.
    "HEALTH_DEAD_LETTER_THRESHOLD": 100,
    "HEALTH_DEAD_LETTER_WINDOW": 3600.0,
    # Seconds each health check waits for Redis, the channel layer or the Celery workers.
    "HEALTH_TIMEOUT": 2.0,
    # --- Circuit breaker around the channel layer and Redis ------------------------------------
    # Consecutive failures that open the breaker, and seconds until it lets a trial call through.
    "BREAKER_FAILURE_THRESHOLD": 5,
    "BREAKER_RESET_TIMEOUT": 5.0,
    # --- Naming --------------------------------------------------------------------------------
    # Prefix of every channel-layer group and cache key Conduit RT creates.
    "KEY_PREFIX": "conduit",
    # Cache alias holding negotiated connection tokens (shared by all processes in production).
    "CACHE_ALIAS": "default",
}

IMPORT_STRINGS: frozenset[str] = frozenset({"TOKEN_VALIDATORS", "HISTORY_BACKEND", "HUB_FILTERS"})


class ConduitSettings:
    """Attribute access to ``CONDUIT_RT`` with defaults; import strings resolved on access."""

    def __init__(self, defaults: Mapping[str, Any] | None = None) -> None:
        self.defaults = dict(defaults or DEFAULTS)
        self._user: dict[str, Any] | None = None
        self._cached: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._user is None:
            value = getattr(settings, SETTING_NAME, {}) or {}
            if not isinstance(value, Mapping):
                raise ImproperlyConfigured(f"{SETTING_NAME} must be a dict, got {type(value)!r}.")
            unknown = sorted(set(value) - set(self.defaults))
            if unknown:
                raise ImproperlyConfigured(
                    f"Unknown {SETTING_NAME} key(s): {', '.join(unknown)}. "
                    f"Known keys: {', '.join(sorted(self.defaults))}."
                )
            self._user = dict(value)
        return self._user

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.defaults:
            raise AttributeError(f"Invalid {SETTING_NAME} setting: {name!r}")
        if name in self._cached:
            return self._cached[name]
        value = self.user_settings.get(name, self.defaults[name])
        if name in IMPORT_STRINGS:
            value = _import_all(name, value)
        self._cached[name] = value
        return value

    def reload(self) -> None:
        """Forget everything read so far; the next access reads ``settings`` again."""
        self._user = None
        self._cached.clear()


def _import_all(name: str, value: Any) -> Any:
    """A dotted path → the object; a list of them → a list (non-strings pass through)."""
    if isinstance(value, str):
        return _import_one(name, value)
    return [_import_one(name, v) if isinstance(v, str) else v for v in value]


def _import_one(name: str, path: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"Could not import {path!r} for {SETTING_NAME}[{name!r}]: {exc}") from exc


def environ_overrides(
    environ: Mapping[str, str], *, prefix: str = ENV_PREFIX, defaults: Mapping[str, Any] = DEFAULTS
) -> dict[str, Any]:
    """Parse ``CONDUIT_RT_<KEY>`` variables into typed values (called from the settings module;
    ``prefix`` and ``defaults`` serve another settings dict the same way).

    The type comes from the default: numbers, booleans (1/true/yes/on), and lists
    (comma-separated). Unknown names under the prefix raise, like unknown keys.
    """
    result: dict[str, Any] = {}
    for env_name, raw in environ.items():
        if not env_name.startswith(prefix):
            continue
        key = env_name[len(prefix) :]
        if key not in defaults:
            raise ImproperlyConfigured(f"Unknown setting in environment: {env_name}.")
        result[key] = _parse_env(env_name, raw, defaults[key])
    return result


def _parse_env(env_name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            return [part.strip() for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{env_name}={raw!r}: {exc}") from exc
    return raw


conduit_settings = ConduitSettings()


def reload_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver, connected in ``HubsConfig.ready``."""
    if setting == SETTING_NAME:
        conduit_settings.reload()
