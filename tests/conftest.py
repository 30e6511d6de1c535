"""Shared fixtures: every store kind as a URL of an empty store, a manual clock."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal import ManualClock
from shoal.stores import open_store
from shoal.stores.base import Store

pytest_plugins = ["tests.servers.fixtures"]

# name -> builds the URL of an empty store of that kind. A store kind joins
# the contract suite by adding one line here; every contract test then runs on it.
StoreURLFactory = Callable[[pytest.FixtureRequest, Path], str]
STORE_KINDS: dict[str, StoreURLFactory] = {
    "memory": lambda request, tmp: "memory://",
    "sqlite": lambda request, tmp: f"sqlite://{tmp / 'sessions.db'}",
    "file": lambda request, tmp: f"file://{tmp / 'sessions'}",
    "dbm": lambda request, tmp: f"dbm://{tmp / 'sessions.dbm'}",
    "redis": lambda request, tmp: _empty_redis(request, "redis_server"),
    "redis-cluster": lambda request, tmp: _empty_redis(request, "redis_cluster"),
    "redis-sentinel": lambda request, tmp: _empty_redis(request, "redis_sentinel"),
    "postgresql": lambda request, tmp: _fresh_sql_table(request, "postgres_server"),
    "mysql": lambda request, tmp: _fresh_sql_table(request, "mariadb_server"),
}


# The same stores through an AsyncStore, each call awaited
# (tests/_async_facade.py): name -> the kind whose URL it opens. A "-threaded"
# kind is the sync store in store threads (ThreadedStore, what a manager handed
# a store object gets); the others are what stores.open_async_store gives. The
# store contract suite runs on these too (tests/contract/test_store_contract.py).
ASYNC_STORE_KINDS: dict[str, str] = {
    "redis-async": "redis",
    "redis-cluster-async": "redis-cluster",
    "redis-sentinel-async": "redis-sentinel",
    "postgresql-async": "postgresql",
    "postgresql-threaded": "postgresql",
    "sqlite-threaded": "sqlite",
}


def open_kind(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of ``kind`` (a STORE_KINDS or ASYNC_STORE_KINDS name), opened."""
    if kind in ASYNC_STORE_KINDS:
        from shoal.stores import AsyncStore, open_async_store
        from shoal.stores._threaded import ThreadedStore
        from tests._async_facade import SyncFacade

        url = STORE_KINDS[ASYNC_STORE_KINDS[kind]](request, tmp_path)

        def make() -> AsyncStore:
            if kind.endswith("-threaded"):
                return ThreadedStore(open_store(url))
            return open_async_store(url)

        facade: Any = SyncFacade(make)
        opened: Store = facade
        return opened
    return open_store(STORE_KINDS[kind](request, tmp_path))


def redis_master_ports(server: Any, fixture: str) -> list[int]:
    """The ports of every master of a private Redis server/Cluster/Sentinel set."""
    if fixture == "redis_cluster":
        return list(server.master_ports())
    if fixture == "redis_sentinel":
        return [server.current_master().port]
    return [server.port]


def _empty_redis(request: pytest.FixtureRequest, fixture: str) -> str:
    """The URL of a private Redis server/Cluster/Sentinel set, every master flushed."""
    import redis  # the redis extra; only needed for these kinds

    server = request.getfixturevalue(fixture)
    for port in redis_master_ports(server, fixture):
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=10) as client:
            client.flushdb()
    url: str = server.url
    return url


def _fresh_sql_table(request: pytest.FixtureRequest, fixture: str) -> str:
    """The URL of a private PostgreSQL/MariaDB with a table of this test's own.

    The store creates the table on first use; it is dropped when the test ends.
    """
    server = request.getfixturevalue(fixture)
    table = f"shoal_{uuid.uuid4().hex[:12]}"
    request.addfinalizer(lambda: _drop_table(server.url, table))
    return f"{server.url}?table={table}"


def _drop_table(url: str, table: str) -> None:
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    else:
        from tests.stores._sql import mysql_connect

        conn = mysql_connect(url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
        finally:
            conn.close()


@pytest.fixture(params=sorted(STORE_KINDS))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store, once per store kind."""
    return STORE_KINDS[request.param](request, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


# The stores that need no server: for the semantics that do not depend on the
# store (the request path, the adapters), which the contract suite runs everywhere.
LOCAL_STORE_KINDS = ("memory", "sqlite")


@pytest.fixture(params=LOCAL_STORE_KINDS)
def local_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty memory or SQLite store."""
    return STORE_KINDS[request.param](request, tmp_path)


@pytest.fixture
def local_store(local_store_url: str) -> Iterator[Store]:
    opened = open_store(local_store_url)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> ManualClock:
    """Starts at the real time, so servers with native TTLs agree with it."""
    return ManualClock(start=float(int(time.time())))


@pytest.fixture
def app_id() -> str:
    """A namespace of this test's own, so tests sharing a server never meet."""
    return f"t{uuid.uuid4().hex[:12]}"
