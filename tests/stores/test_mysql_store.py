"""What the contract suite does not see of the MySQL/MariaDB store.

URLs and their typed parameters, masking, round trips per operation
(counted by a cursor that counts), the table created on first use by many
processes at once, a dropped table recreated, and a lock wait that ends in
its timeout.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("pymysql", reason="the mysql extra is not installed")

import pymysql  # type: ignore[import-untyped,unused-ignore]  # noqa: E402
import pymysql.cursors  # type: ignore[import-untyped,unused-ignore]  # noqa: E402

from shoal.errors import ConfigError, StoreUnavailable  # noqa: E402
from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import (  # noqa: E402
    ApplyStatus,
    Change,
    LoadStatus,
    LockRequest,
    NewRecord,
    RecordKey,
    Touch,
)
from shoal.stores.mysql import MySQLStore  # noqa: E402
from tests.servers import MariaDBServer, free_port  # noqa: E402

ctx = multiprocessing.get_context("spawn")
NOW = float(int(time.time()))
IDLE = 600.0
KEY = RecordKey("app", "c" * 64)


def new(fields: dict[str, bytes] | None = None) -> NewRecord:
    return NewRecord(NOW, NOW + IDLE, NOW + 10 * IDLE, fields or {})


def connect(url: str) -> Any:
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname, port=parts.port, user=parts.username,
        database=parts.path.lstrip("/"), autocommit=True, connect_timeout=5, read_timeout=30,
    )


@pytest.fixture
def table(mariadb_server: MariaDBServer) -> Iterator[str]:
    name = f"s_{uuid.uuid4().hex[:10]}"
    yield name
    conn = connect(mariadb_server.url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS `{name}`")
    finally:
        conn.close()


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown store URL parameter 'pool'") as info:
        open_store("mysql://u:pw@h/db?pool=3")
    for name in ("table", "connect_timeout", "read_timeout", "lock_wait_timeout", "ssl_ca"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        pytest.param("mysql://h/db?table=a-b", "table name", id="table-dash"),
        pytest.param("mysql://h/db?read_timeout=0", "positive", id="timeout-zero"),
        pytest.param("mysql://h/", "names its database", id="no-database"),
        pytest.param("mysql://h:x/db", "(?i)port", id="bad-port"),
    ],
)
def test_bad_urls_are_config_errors(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(url)


def test_password_never_shows() -> None:
    port = free_port()
    store = open_store(f"mariadb://ada:s3cret@127.0.0.1:{port}/db?connect_timeout=2&breaker=off")
    try:
        assert store.url == f"mariadb://ada:***@127.0.0.1:{port}/db?connect_timeout=2"
        with pytest.raises(StoreUnavailable) as info:
            store.load(KEY, now=NOW)
        assert "s3cret" not in str(info.value) and "2003" in str(info.value)
        assert isinstance(info.value.__cause__, pymysql.MySQLError), "the cause is chained"
    finally:
        store.close()


class CountingCursor(pymysql.cursors.Cursor):  # type: ignore[misc]
    executed = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.executed += 1
        return super().execute(*args, **kwargs)


def round_trips(action: Any) -> int:
    before = CountingCursor.executed
    action()
    return CountingCursor.executed - before


def test_round_trips_per_operation(mariadb_server: MariaDBServer, table: str) -> None:
    parts = urlsplit(mariadb_server.url)
    store = MySQLStore(
        host=parts.hostname or "", port=parts.port or 3306, user="root",
        database=parts.path.lstrip("/"), table=table,
        connect_kwargs={"cursorclass": CountingCursor},
    )
    try:
        store.load(RecordKey("app", "d" * 64), now=NOW)  # connects, creates the table
        lock = LockRequest("tok", 30.0)
        counts = {
            "create": round_trips(lambda: store.create(KEY, new({"a": b"1"}), now=NOW)),
            "load": round_trips(lambda: store.load(KEY, now=NOW + 1, touch=Touch(NOW, IDLE))),
            "load and lock": round_trips(lambda: store.load(KEY, now=NOW + 2, lock=lock)),
            "apply": round_trips(lambda: store.apply(
                KEY, Change(IDLE, set={"b": b"2"}, lease_token="tok", release=True), now=NOW + 3)),
            "purge": round_trips(lambda: store.purge(now=NOW, grace=0)),
            "delete": round_trips(lambda: store.delete(KEY)),
        }
    finally:
        store.close()
    # A write is "START TRANSACTION; SELECT ... FOR UPDATE", then "UPDATE ...; COMMIT".
    assert counts == {
        "create": 1, "load": 1, "load and lock": 2, "apply": 2, "purge": 1, "delete": 1,
    }


def create_in_new_table(url: str, key_hash: str, start: Barrier) -> None:
    """Open the store on a table nobody created yet, and create at the same moment."""
    store = open_store(url)
    try:
        start.wait(60)
        assert store.create(RecordKey("app", key_hash), new({"k": b"v"}), now=NOW)
    finally:
        store.close()


def test_many_processes_create_the_table_on_first_use_at_once(
    mariadb_server: MariaDBServer, table: str
) -> None:
    url = f"{mariadb_server.url}?table={table}"
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


def test_a_dropped_table_is_created_again(mariadb_server: MariaDBServer, table: str) -> None:
    store = open_store(f"{mariadb_server.url}?table={table}")
    try:
        assert store.create(KEY, new(), now=NOW)
        conn = connect(mariadb_server.url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP TABLE `{table}`")
        finally:
            conn.close()
        assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
        assert store.create(KEY, new(), now=NOW)
    finally:
        store.close()


def test_a_row_locked_elsewhere_ends_in_the_lock_wait_timeout(
    mariadb_server: MariaDBServer, table: str
) -> None:
    store = open_store(f"{mariadb_server.url}?table={table}&lock_wait_timeout=1&breaker=off")
    try:
        store.create(KEY, new(), now=NOW)
        blocker = connect(mariadb_server.url)
        try:
            with blocker.cursor() as cursor:
                cursor.execute("START TRANSACTION")
                cursor.execute(f"SELECT 1 FROM `{table}` FOR UPDATE")
            with pytest.raises(StoreUnavailable, match="1205"):
                store.apply(KEY, Change(IDLE, set={"a": b"1"}), now=NOW)
        finally:
            blocker.close()  # rolls back, freeing the row
        assert store.apply(KEY, Change(IDLE, set={"a": b"1"}), now=NOW).status is ApplyStatus.OK
    finally:
        store.close()
