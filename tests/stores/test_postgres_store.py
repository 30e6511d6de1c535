"""What the contract suite does not see of the PostgreSQL store.

One statement per operation (counted by a cursor that counts), an
idempotent migration, and keys jsonb could not hold as they are. URLs,
masking, the table created on first use and dropped, and a blocked
statement's timeout are tested with MySQL's in test_sql_stores.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

import psycopg  # noqa: E402

from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import (  # noqa: E402
    ApplyStatus,
    Change,
    LockRequest,
    RecordKey,
    Touch,
)
from shoal.stores.postgresql import PostgresStore  # noqa: E402
from tests.servers import PostgresServer  # noqa: E402
from tests.stores._sql import IDLE, KEY, NOW, Counting, fresh_table, new  # noqa: E402


@pytest.fixture
def table(postgres_server: PostgresServer) -> Iterator[str]:
    yield from fresh_table(postgres_server.url)


# -- one statement per operation -------------------------------------------------------


class CountingCursor(Counting, psycopg.Cursor[Any]):
    pass


statements = CountingCursor.calls


def test_every_operation_is_one_statement(postgres_server: PostgresServer, table: str) -> None:
    store = PostgresStore(
        postgres_server.url, table=table, connect_kwargs={"cursor_factory": CountingCursor}
    )
    other = RecordKey("app", "d" * 64)
    try:
        store.load(other, now=NOW)  # the first use checks (and creates) the table
        lock = LockRequest("tok", 30.0)
        due = Touch(NOW + 100, IDLE)
        counts = {
            "create": statements(lambda: store.create(KEY, new({"a": b"1"}), now=NOW)),
            "load": statements(lambda: store.load(KEY, now=NOW + 1, touch=Touch(NOW, IDLE))),
            "load, touch due": statements(lambda: store.load(KEY, now=NOW + 200, touch=due)),
            "load and lock": statements(lambda: store.load(KEY, now=NOW + 201, lock=lock)),
            "renew": statements(lambda: store.renew(KEY, "tok", now=NOW + 202, lease=30)),
            "apply, merge": statements(lambda: store.apply(
                KEY, Change(IDLE, set={"b": b"2"}, lease_token="tok"), now=NOW + 203)),
            "apply, expect": statements(lambda: store.apply(
                KEY, Change(IDLE, set={"b": b"3"}, expect_fields={"b": 2}), now=NOW + 204)),
            "apply, replace, release": statements(lambda: store.apply(
                KEY, Change(IDLE, set={"a": b"1"}, replace=True, lease_token="tok",
                            release=True), now=NOW + 205)),
            "unlock": statements(lambda: store.unlock(KEY, "nobody")),
            "records": statements(lambda: list(store.records("app"))),
            "purge": statements(lambda: store.purge(now=NOW, grace=0)),
            "invalidate": statements(lambda: store.invalidate(KEY, now=NOW + 206)),
            "delete": statements(lambda: store.delete(KEY)),
        }
    finally:
        store.close()
    # A touch that is due adds one UPDATE, once per touch interval.
    assert counts == {name: 2 if name == "load, touch due" else 1 for name in counts}


# -- the table ---------------------------------------------------------------------------


def test_migrate_is_idempotent(postgres_server: PostgresServer, table: str) -> None:
    store = PostgresStore(postgres_server.url, table=table)
    try:
        store.migrate()
        store.migrate()
        with psycopg.connect(postgres_server.url) as conn:
            indexes = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", (table,)
            ).fetchall()
        assert [name for (name,) in indexes] == [f"{table}_expires", f"{table}_pkey"]
    finally:
        store.close()


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["nul\x00inside", "\x01starts-with-the-escape", "lone \ud800 surrogate", "ünï"],
    ids=["nul", "escape-mark", "surrogate", "unicode"],
)
def test_keys_jsonb_cannot_hold_round_trip(
    postgres_server: PostgresServer, table: str, key: str
) -> None:
    store = open_store(f"{postgres_server.url}?table={table}")
    try:
        store.create(KEY, new({key: b"1"}), now=NOW)
        assert store.apply(KEY, Change(IDLE, set={key: b"2"}), now=NOW).status is ApplyStatus.OK
        conflict = store.apply(KEY, Change(IDLE, expect_fields={key: 1}), now=NOW)
        assert conflict.conflicts == (key,)
        record = store.load(KEY, now=NOW).record
        assert record is not None and dict(record.fields) == {key: b"2"}
        assert dict(record.field_versions) == {key: 2}
        store.apply(KEY, Change(IDLE, delete=[key]), now=NOW)
        record = store.load(KEY, now=NOW).record
        assert record is not None and dict(record.fields) == {}
    finally:
        store.close()
