"""Session-scoped pytest fixtures that start the private servers.

What: `redis_server`, `redis_cluster` (3 masters + 3 replicas),
`redis_sentinel` (master + replica + 2 sentinels), `postgres_server` and
`mariadb_server`. Each starts its server on first use, yields the server
object (`.url`, `.kill()`, `.restart()`...) and stops it at session end. A
missing binary skips the test locally and fails it in CI (`skip_or_fail`).

Register with `pytest_plugins = ["tests.servers.fixtures"]` in the root
conftest (tests/servers/conftest.py registers it for this dir if not yet).

Why session scope: servers are slow to start next to a test. Under
pytest-xdist every worker is its own session, so each starts its own
servers on its own ports: tests share a server only within a worker, and
keep apart by key/table namespace. A test that kills a server restarts it
(`restart()`, or `heal()` for a cluster/sentinel set) before it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from .availability import (
    mariadb_unavailable,
    postgres_unavailable,
    redis_cluster_unavailable,
    redis_sentinel_unavailable,
    redis_unavailable,
    skip_or_fail,
)
from .base import ServerGroup, ServerProcess
from .mariadb import MariaDBServer
from .postgres import PostgresServer
from .redis_cluster import RedisCluster
from .redis_sentinel import RedisSentinel
from .redis_server import RedisServer

_T = TypeVar("_T", bound=ServerProcess | ServerGroup)


def _serve(
    unavailable: Callable[[], str | None], make: Callable[[], _T]
) -> Iterator[_T]:
    """Skip/fail if unavailable, else start `make()`, yield it, clean it up."""
    reason = unavailable()
    if reason is not None:
        skip_or_fail(reason)
    server = make()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone Redis: url redis://127.0.0.1:PORT/0."""
    yield from _serve(redis_unavailable, RedisServer)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster, 3 masters with a replica each: url redis+cluster://127.0.0.1:PORT."""
    yield from _serve(redis_cluster_unavailable, lambda: RedisCluster(replicas=True))


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """Master + replica + 2 sentinels: url redis+sentinel://127.0.0.1:S1,127.0.0.1:S2/mymaster."""
    yield from _serve(redis_sentinel_unavailable, lambda: RedisSentinel(replica=True))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL: url postgresql://postgres@127.0.0.1:PORT/postgres."""
    yield from _serve(postgres_unavailable, PostgresServer)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """A MariaDB: url mysql://root@127.0.0.1:PORT/test."""
    yield from _serve(mariadb_unavailable, MariaDBServer)
