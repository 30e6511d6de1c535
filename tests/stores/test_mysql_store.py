"""What the contract suite does not see of the MySQL/MariaDB store.

Round trips per operation, counted by a cursor that counts. URLs, masking,
the table created on first use and dropped, and the lock wait timeout are
tested with PostgreSQL's in test_sql_stores.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

pytest.importorskip("pymysql", reason="the mysql extra is not installed")

import pymysql.cursors  # noqa: E402

from shoal.stores.base import Change, LockRequest, RecordKey, Touch  # noqa: E402
from shoal.stores.mysql import MySQLStore  # noqa: E402
from tests.servers import MariaDBServer  # noqa: E402
from tests.stores._sql import IDLE, KEY, NOW, Counting, fresh_table, new  # noqa: E402


@pytest.fixture
def table(mariadb_server: MariaDBServer) -> Iterator[str]:
    yield from fresh_table(mariadb_server.url)


class CountingCursor(Counting, pymysql.cursors.Cursor):
    pass


round_trips = CountingCursor.calls


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
