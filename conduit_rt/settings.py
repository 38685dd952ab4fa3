"""Project settings: embedded defaults (SQLite, in-memory layer, eager Celery); production parts by env.

Environment variables:

- ``REDIS_URL``: switches the channel layer (channels-redis), the cache that holds negotiated
  connections, and Celery's broker to Redis, so several processes share one state.
- ``CHANNEL_LAYER_REDIS_URLS``: comma-separated Redis URLs the channel layer shards over
  (channels-redis consistent hashing; every process must list the same URLs in the same order).
  Default: ``REDIS_URL`` alone. Only the layer moves: Conduit RT's own stores, the cache and
  Celery stay on ``REDIS_URL``, which must be set too (``docs/operations.md``).
- ``DATABASE_URL``: ``sqlite:///path`` or ``postgres://user@host/db`` (dj-database-url form).
- ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``, ``DJANGO_ALLOWED_HOSTS`` (comma-separated).
- ``CELERY_TASK_ALWAYS_EAGER``: run Celery tasks in the calling process (default: without Redis).
- ``CONDUIT_RT_<KEY>``: overrides one key of ``CONDUIT_RT`` (see ``docs/settings.md``).
- ``CONDUIT_DEMO_<KEY>``: overrides one setting of the demo (``conduit_rt/demo/conf.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from conduit_rt.demo.conf import environ_overrides as demo_environ_overrides
from hubs.beat import beat_schedule
from hubs.conf import environ_overrides

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = _env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "conduit-rt-embedded-insecure-key-change-me-in-production-0123456789"
)
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # django-health-check 4.x: no sub-apps and no settings; its checks are configured on the view
    # (monitoring/health.py). The app gives the HTML template and ``manage.py health_check``.
    "health_check",
    # Request/response and database metrics, exposed next to Conduit RT's own at /metrics.
    "django_prometheus",
    "hubs",
    "monitoring",
    "conduit_rt.demo",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "conduit_rt.urls"
ASGI_APPLICATION = "conduit_rt.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        # Persistent connections only where the ORM runs in one long-lived thread (Channels'
        # database_sync_to_async does); DATABASE_CONN_MAX_AGE opts in (docs/operations.md).
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the server, workers and commands read while one writes; synchronous=NORMAL skips the
    # fsync per commit (WAL keeps the file consistent; a power cut may lose the last commits).
    # The embedded database only: production runs PostgreSQL.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS: list[object] = [BASE_DIR / "static"]
# The official SignalR browser client, installed from package-lock.json by the run script.
if (BASE_DIR / "node_modules/@microsoft/signalr/dist/browser").is_dir():
    STATICFILES_DIRS.append(("vendor/signalr", BASE_DIR / "node_modules/@microsoft/signalr/dist/browser"))
if (BASE_DIR / "node_modules/@microsoft/signalr-protocol-msgpack/dist/browser").is_dir():
    STATICFILES_DIRS.append(
        (
            "vendor/signalr-msgpack",
            BASE_DIR / "node_modules/@microsoft/signalr-protocol-msgpack/dist/browser",
        )
    )
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/"

CONDUIT_RT: dict[str, object] = {
    # Browser origins allowed besides the request's own host (clients without Origin are accepted).
    "ALLOWED_ORIGINS": [],
    **environ_overrides(os.environ),
}
# The demo's task simulation and page (conduit_rt/demo/conf.py); CONDUIT_DEMO_<KEY> overrides.
CONDUIT_DEMO: dict[str, object] = demo_environ_overrides(os.environ)

# One prefix names everything this deployment keeps in Redis (layer keys, cache keys, the Celery
# queue), so several deployments can share one Redis without seeing each other's messages.
key_prefix = str(CONDUIT_RT.get("KEY_PREFIX", "conduit"))  # lower case: not a Django setting

REDIS_URL = os.environ.get("REDIS_URL", "").strip()
# The Redis servers the channel layer shards over (lower case: not a Django setting). The order
# matters: channels-redis picks a group's or a process channel's server by its index in the list.
layer_hosts = [url.strip() for url in os.environ.get("CHANNEL_LAYER_REDIS_URLS", "").split(",")]
layer_hosts = [url for url in layer_hosts if url]
if layer_hosts and not REDIS_URL:
    raise ImproperlyConfigured(
        "CHANNEL_LAYER_REDIS_URLS needs REDIS_URL: Conduit RT's shared stores, the cache and Celery "
        "stay on REDIS_URL, and without it they would live in each process's memory."
    )

if REDIS_URL:
    # Conduit RT's own shared state (group histories) lives in the same Redis.
    CONDUIT_RT.setdefault("REDIS_URL", REDIS_URL)
    CONDUIT_RT.setdefault("HISTORY_BACKEND", "hubs.delivery.history.RedisHistory")
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis with bounded pools that wait (hubs/redis_layer.py).
            "BACKEND": "hubs.redis_layer.RedisChannelLayer",
            "CONFIG": {
                # Consistent hashing over these: a group (its member list) lives on the server its
                # name hashes to, a process channel's messages on the one its name hashes to.
                "hosts": layer_hosts or [REDIS_URL],
                "prefix": f"{key_prefix}:layer:",
                # Per channel: each server process has one channel for all its connections
                # (hubs/fanout.py), so this bounds the messages waiting for a whole process.
                "capacity": 10000,
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": key_prefix,
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    # Channels' in-memory layer with a throttled expiry sweep (see hubs/layers.py): one process only.
    CHANNEL_LAYERS = {"default": {"BACKEND": "hubs.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"

# Eager (in the server process) in the embedded mode; a real worker once Redis is there.
CELERY_TASK_ALWAYS_EAGER = _env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)

# Retries of acknowledged messages and the stale-connection cleanup run in ONE layer: Celery
# beat + workers once there is a real broker, else a loop in the server process
# (docs/operations.md).
CONDUIT_RT.setdefault("RETRY_RUNNER", "embedded" if CELERY_TASK_ALWAYS_EAGER else "celery")
CONDUIT_RT.setdefault("CLEANUP_RUNNER", CONDUIT_RT["RETRY_RUNNER"])
CELERY_BEAT_SCHEDULE = beat_schedule(
    float(CONDUIT_RT.get("RETRY_INTERVAL", 1.0)),  # type: ignore[arg-type]
    cleanup_interval=float(CONDUIT_RT.get("STALE_CLEANUP_INTERVAL", 60.0)),  # type: ignore[arg-type]
)

CELERY_TASK_DEFAULT_QUEUE = key_prefix
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "filters": {
        "redact_tokens": {"()": "hubs.logging.RedactTokensFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_tokens"],
        },
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}
