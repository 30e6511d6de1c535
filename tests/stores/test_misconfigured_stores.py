"""A store URL the server refuses is a configuration problem, said once, not an outage.

An unknown database or role, a wrong password, a Redis database number the
server does not have: the server answers, and refuses. The error is still
``StoreUnavailable`` (a 503; the circuit breaker then answers the next
requests at once), but its message says it is no outage, repeats the
server's words (never the password) and names the URL to fix; and
psycopg's pool logger does not repeat it as multi-line warnings.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

from shoal.errors import StoreUnavailable
from shoal.stores import open_store
from shoal.stores.base import RecordKey
from tests.servers import PostgresServer, RedisServer
from tests.servers.availability import (
    postgres_unavailable,
    redis_unavailable,
    skip_or_fail,
)

KEY = RecordKey("app", "c" * 64)
NOW = 1_700_000_000.0


def refusal(url: str) -> tuple[str, str]:
    """The detail of the first call's error, then of the second's."""
    store = open_store(url)
    try:
        details = []
        for _ in range(2):
            with pytest.raises(StoreUnavailable) as info:
                store.load(KEY, now=NOW)
            assert "s3cret" not in str(info.value)
            details.append(info.value.detail)
        return details[0], details[1]
    finally:
        store.close()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL where role ``pw`` must log in with a password (scram)."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    import psycopg

    reason = postgres_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    with PostgresServer() as server:
        with psycopg.connect(server.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("CREATE ROLE pw LOGIN PASSWORD 'right'")
            row = conn.execute("SHOW hba_file").fetchone()
            assert row is not None
            with open(row[0], "r+") as hba:
                rules = hba.read()
                hba.seek(0)
                hba.write("host all pw 127.0.0.1/32 scram-sha-256\n" + rules)
            conn.execute("SELECT pg_reload_conf()")
        yield server


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param(("/postgres?", "/nodb?"), 'database "nodb" does not exist', id="database"),
        pytest.param(("postgres@", "nobody@"), 'role "nobody" does not exist', id="role"),
        pytest.param(
            ("postgres@", "pw:s3cret@"), 'password authentication failed for user "pw"',
            id="password",
        ),
    ],
)
def test_postgresql_refusing_the_url_says_so_once(
    own_postgres: PostgresServer,
    caplog: pytest.LogCaptureFixture,
    change: tuple[str, str],
    says: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="psycopg")
    caplog.set_level(logging.INFO, logger="shoal")
    logging.getLogger("psycopg.pool").setLevel(logging.INFO)
    try:
        url = f"{own_postgres.url}?table=t_{uuid.uuid4().hex[:8]}".replace(*change)
        first, second = refusal(url)
    finally:
        logging.getLogger("psycopg.pool").setLevel(logging.NOTSET)
    assert "not an outage" in first and says in first, first
    assert "check the user, password and database name in the store URL" in first
    assert second.startswith("circuit open"), "a refusal that waited opens the breaker"
    assert says in second, "the breaker repeats it"
    pool = [r for r in caplog.records if r.name.startswith("psycopg") and r.levelno >= 30]
    assert not pool, [r.getMessage() for r in pool]
    opened = [r for r in caplog.records if r.name == "shoal.breaker"]
    assert len(opened) == 1 and says in opened[0].getMessage(), "said once, when it opened"


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A Redis with user ``ada`` (password ``right``) besides the default user."""
    pytest.importorskip("redis", reason="the redis extra is not installed")
    reason = redis_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    with RedisServer() as server:
        server.command("ACL", "SETUSER", "ada", "on", ">right", "~*", "&*", "+@all")
        yield server


@pytest.mark.parametrize(
    ("change", "says", "fix"),
    [
        pytest.param(("redis://", "redis://ada:s3cret@"), "invalid username-password pair",
                     "check the user and password", id="password"),
        pytest.param(("/0", "/99"), "DB index is out of range",
                     "check the database number", id="database"),
    ],
)
def test_redis_refusing_the_url_says_so(
    own_redis: RedisServer, change: tuple[str, str], says: str, fix: str
) -> None:
    first, _ = refusal(own_redis.url.replace(*change))
    assert "not an outage" in first and says in first and fix in first, first
