"""Fixtures of the end-to-end tests: Redis, a migrated site, servers and client processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from .harness import ROOT, ClientProcess, Site


def site_env(db_path: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONDUIT_RT_", "DJANGO_", "REDIS_URL", "DATABASE_URL", "PYTEST"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "conduit_rt.settings",
            "DATABASE_URL": f"sqlite:///{db_path}",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def make_site(tmp_path_factory, redis_url) -> Iterator[Callable[..., Site]]:
    """Factory of migrated sites: ``make_site(redis=True, **env)``."""
    sites: list[Site] = []

    def make(*, redis: bool = True, database_url: str | None = None, **extra: str) -> Site:
        workdir = tmp_path_factory.mktemp("site")
        # Each site its own key prefix: its layer, cache and Celery queue are its own in Redis.
        extra.setdefault("CONDUIT_RT_KEY_PREFIX", f"e2e{len(sites)}")
        site = Site(workdir, site_env(str(workdir / "db.sqlite3"), redis_url if redis else None, **extra))
        if database_url:
            site.env["DATABASE_URL"] = database_url
        site.manage("migrate", "--no-input", "-v", "0", timeout=120)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()


@pytest.fixture(scope="session")
def site(make_site) -> Site:
    """The shared Redis-backed site, with short keep-alive so tests need not wait for pings."""
    return make_site(CONDUIT_RT_KEEP_ALIVE_INTERVAL="1")


@pytest.fixture(scope="session")
def server(site):
    return site.server()


@pytest.fixture(scope="session")
def tokens(site) -> dict[str, str]:
    return {name: site.token(name) for name in ("alice", "bob")}


@pytest.fixture
def clients() -> Iterator[list[ClientProcess]]:
    """Client processes a test starts; all stopped at the end."""
    started: list[ClientProcess] = []
    yield started
    for client in started:
        client.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL (127.0.0.1:5432, trust auth), dropped afterwards."""
    name = f"conduit_e2e_{os.getpid()}"
    admin = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
    subprocess.run([*admin, f'DROP DATABASE IF EXISTS "{name}"'], check=True, capture_output=True, timeout=30)
    subprocess.run([*admin, f'CREATE DATABASE "{name}"'], check=True, capture_output=True, timeout=30)
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    subprocess.run(
        [*admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
        check=False,
        capture_output=True,
        timeout=30,
    )
