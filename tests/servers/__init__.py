"""Private database servers for the test suite.

Each server runs as a child process of the test run, on a free 127.0.0.1
port and a temp data dir that both survive `restart()`, and is stopped by
PID: the machine's own servers (6379, 5432, 3306) are never touched.

    from tests.servers import RedisServer
    with RedisServer() as server:
        ...  # server.url == "redis://127.0.0.1:PORT/0"

Fixtures: tests/servers/fixtures.py; availability checks (skip locally, fail
in CI): tests/servers/availability.py.
"""

from __future__ import annotations

from .base import ServerGroup, ServerProcess
from .mariadb import MariaDBServer
from .postgres import PostgresServer
from .redis_cluster import RedisCluster
from .redis_sentinel import RedisSentinel
from .redis_server import RedisServer
from .util import ServerStartError, ServerUnavailable, free_port

__all__ = [
    "MariaDBServer",
    "PostgresServer",
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "ServerGroup",
    "ServerProcess",
    "ServerStartError",
    "ServerUnavailable",
    "free_port",
]
