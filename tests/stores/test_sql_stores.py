"""PostgreSQL and MySQL/MariaDB alike, beyond the contract suite.

Each test runs on both SQL stores: URL parameters (the table name, timeouts,
unknown names), a masked password, the table created on first use by many
processes at once, a dropped table created again, and a write blocked by a
row lock that ends in the store's timeout. What only one of them has is in
test_postgres_store.py / test_mysql_store.py.
"""

from __future__ import annotations

import importlib
import multiprocessing
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier

import pytest

from shoal.errors import ConfigError, StoreUnavailable
from shoal.stores import open_store
from shoal.stores.base import ApplyStatus, Change, LoadStatus, RecordKey
from tests.servers import free_port
from tests.stores._sql import (
    IDLE,
    KEY,
    NOW,
    execute,
    fresh_table,
    new,
    quote,
    rows_locked,
    table_locked,
)

ctx = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Kind:
    scheme: str
    alias: str  # the other scheme that opens the same store
    driver: str  # the module of the extra
    driver_error: str  # the driver's root exception, chained as the cause
    server: str  # its server fixture
    options: tuple[str, ...]  # some of the valid parameters an unknown one lists
    timeout: str  # one of its timeout parameters
    unreachable: str  # a short wait for a server that is not there...
    unreachable_says: str  # ...and what the error then says
    lock_timeout: str  # the parameter that ends a write blocked by a row lock...
    lock_timeout_says: str  # ...and what the error then says (a regex)


KINDS = {
    "postgresql": Kind(
        "postgresql", "postgres", "psycopg", "Error", "postgres_server",
        ("table", "max_size", "connect_timeout", "statement_timeout", "sslmode"),
        "statement_timeout", "pool_timeout=0.5", "refused",
        "statement_timeout=0.5", "due to (statement|lock) timeout",
    ),
    "mysql": Kind(
        "mysql", "mariadb", "pymysql", "MySQLError", "mariadb_server",
        ("table", "connect_timeout", "read_timeout", "lock_wait_timeout", "ssl_ca"),
        "read_timeout", "connect_timeout=2", "2003",
        "lock_wait_timeout=1", "1205",
    ),
}  # fmt: skip


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> Kind:
    found = KINDS[request.param]
    pytest.importorskip(found.driver, reason=f"the {found.alias} extra is not installed")
    return found


@pytest.fixture
def server_url(kind: Kind, request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(kind.server).url
    return url


@pytest.fixture
def table(server_url: str) -> Iterator[str]:
    yield from fresh_table(server_url)


# -- URLs --------------------------------------------------------------------------


def test_unknown_parameter_lists_the_valid_ones(kind: Kind) -> None:
    with pytest.raises(ConfigError, match="unknown store URL parameter 'pool'") as info:
        open_store(f"{kind.scheme}://u:pw@h/db?pool=3")
    for name in kind.options:
        assert name in str(info.value)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        pytest.param("table=a-b", "table name", id="table-dash"),
        pytest.param("table=" + "t" * 60, "table name", id="table-long"),
        pytest.param("{timeout}=0", "positive", id="timeout-zero"),
    ],
)
def test_bad_parameters_are_config_errors(kind: Kind, query: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(f"{kind.scheme}://h/db?{query.format(timeout=kind.timeout)}")


@pytest.mark.parametrize(
    ("name", "url", "match"),
    [
        pytest.param("mysql", "mysql://h/", "names its database", id="mysql-no-database"),
        pytest.param("mysql", "mysql://h:x/db", "(?i)port", id="mysql-bad-port"),
        pytest.param("postgresql", "postgresql://h/db?max_size=x", "invalid literal",
                     id="postgresql-not-a-number"),
        pytest.param("postgresql", "postgresql://h/db?min_size=5&max_size=2", "min_size",
                     id="postgresql-sizes"),
        pytest.param("postgresql", "postgresql://h/db?prepared=maybe", "true or false",
                     id="postgresql-bad-boolean"),
    ],
)
def test_bad_urls_of_one_kind_are_config_errors(name: str, url: str, match: str) -> None:
    found = KINDS[name]
    pytest.importorskip(found.driver, reason=f"the {found.alias} extra is not installed")
    with pytest.raises(ConfigError, match=match):
        open_store(url)


def test_password_never_shows(kind: Kind) -> None:
    port = free_port()
    store = open_store(f"{kind.alias}://ada:s3cret@127.0.0.1:{port}/db?{kind.unreachable}"
                       "&breaker=off")
    try:
        assert store.url == f"{kind.alias}://ada:***@127.0.0.1:{port}/db?{kind.unreachable}"
        assert "s3cret" not in repr(store)
        with pytest.raises(StoreUnavailable) as info:
            store.load(KEY, now=NOW)
        assert "s3cret" not in str(info.value)
        assert kind.unreachable_says in str(info.value).lower()
        driver_error = getattr(importlib.import_module(kind.driver), kind.driver_error)
        assert isinstance(info.value.__cause__, driver_error), "the cause is chained"
    finally:
        store.close()


# -- the table ---------------------------------------------------------------------------


def create_in_new_table(url: str, key_hash: str, start: Barrier) -> None:
    """Open the store on a table nobody created yet, and create at the same moment."""
    store = open_store(url)
    try:
        start.wait(60)
        assert store.create(RecordKey("app", key_hash), new({"k": b"v"}), now=NOW)
    finally:
        store.close()


def test_many_processes_create_the_table_on_first_use_at_once(
    server_url: str, table: str
) -> None:
    url = f"{server_url}?table={table}"
    start = ctx.Barrier(4)
    procs = [
        ctx.Process(target=create_in_new_table, args=(url, f"{i:064x}", start)) for i in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    store = open_store(url)
    try:
        assert len(list(store.records("app"))) == 4
    finally:
        store.close()


def test_a_dropped_table_is_created_again(server_url: str, table: str) -> None:
    store = open_store(f"{server_url}?table={table}")
    try:
        assert store.create(KEY, new(), now=NOW)
        execute(server_url, f"DROP TABLE {quote(server_url, table)}")
        assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
        assert store.create(KEY, new(), now=NOW)
    finally:
        store.close()


# -- timeouts ------------------------------------------------------------------------------


def test_a_row_locked_elsewhere_ends_in_the_timeout(
    kind: Kind, server_url: str, table: str
) -> None:
    store = open_store(f"{server_url}?table={table}&{kind.lock_timeout}&breaker=off")
    try:
        store.create(KEY, new(), now=NOW)
        with rows_locked(server_url, table):
            with pytest.raises(StoreUnavailable, match=kind.lock_timeout_says):
                store.apply(KEY, Change(IDLE, set={"a": b"1"}), now=NOW)
        assert store.apply(KEY, Change(IDLE, set={"a": b"1"}), now=NOW).status is ApplyStatus.OK
    finally:
        store.close()


def test_table_creation_outlasts_a_requests_timeout(
    kind: Kind, server_url: str, table: str
) -> None:
    """DDL waiting on a busy catalog longer than a request may wait still succeeds.

    A first start on a loaded server used to fail its CREATE under the short
    per-request timeout; the creation has ``schema_timeout`` (30 s) instead.
    """
    first = open_store(f"{server_url}?table={table}")
    first.migrate()  # type: ignore[attr-defined]
    first.close()
    store = open_store(f"{server_url}?table={table}&{kind.timeout}=0.3&breaker=off")
    try:
        with table_locked(server_url, table) as release:
            timer = threading.Timer(1.5, release)  # well past the 0.3 s request timeout
            timer.start()
            try:
                store.migrate()  # type: ignore[attr-defined]
            finally:
                timer.cancel()
    finally:
        store.close()
