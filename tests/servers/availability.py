"""Which private servers can run here, and what to do when one cannot.

What: one function per server kind returning None when its binaries are
installed, else a human reason (what is missing, what to install); and
`skip_or_fail(reason)`, which skips the test on a developer's machine but
fails it when the environment variable CI is "true".

Why: a developer without, say, MariaDB still runs the rest of the suite,
but in CI a missing store must never pass silently as a skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn

import pytest

from .mariadb import check_mariadb
from .postgres import check_postgres
from .redis_server import find_redis_cli, find_redis_server
from .util import ServerUnavailable


def _reason(check: Callable[[], object]) -> str | None:
    try:
        check()
    except ServerUnavailable as exc:
        return str(exc)
    return None


def redis_unavailable() -> str | None:
    """None if a RedisServer can start here, else why not."""
    return _reason(find_redis_server)


def redis_cluster_unavailable() -> str | None:
    """None if a RedisCluster can start here (redis-server and redis-cli), else why not."""
    return redis_unavailable() or _reason(find_redis_cli)


def redis_sentinel_unavailable() -> str | None:
    """None if a RedisSentinel can start here, else why not.

    Sentinel mode is built into redis-server (`--sentinel`), so redis-server suffices.
    """
    return redis_unavailable()


def postgres_unavailable() -> str | None:
    """None if a PostgresServer can start here, else why not."""
    return _reason(check_postgres)


def mariadb_unavailable() -> str | None:
    """None if a MariaDBServer can start here, else why not."""
    return _reason(check_mariadb)


def in_ci() -> bool:
    """Whether we run in CI (the environment variable CI is "true")."""
    return os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test locally; fail it in CI, where every store must be tested."""
    if in_ci():
        pytest.fail(
            f"{reason} [CI=true: a missing server fails the run]", pytrace=False
        )
    pytest.skip(reason)
