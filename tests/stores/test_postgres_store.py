"""What the contract suite does not see of the PostgreSQL store.

URLs and their typed parameters, masking, one statement per operation
(counted by a cursor that counts), the table created on first use by many
processes at once, a dropped table recreated, timeouts that end a blocked
statement, and keys jsonb could not hold as they are.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

import psycopg  # noqa: E402

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
from shoal.stores.postgresql import PostgresStore  # noqa: E402
from tests.servers import PostgresServer, free_port  # noqa: E402

ctx = multiprocessing.get_context("spawn")
NOW = float(int(time.time()))
IDLE = 600.0
KEY = RecordKey("app", "c" * 64)


def new(fields: dict[str, bytes] | None = None) -> NewRecord:
    return NewRecord(NOW, NOW + IDLE, NOW + 10 * IDLE, fields or {})


@pytest.fixture
def table(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"s_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_server.url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')


# -- URLs --------------------------------------------------------------------------


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown store URL parameter 'pool'") as info:
        open_store("postgresql://u:pw@h/db?pool=3")
    for name in ("table", "max_size", "connect_timeout", "statement_timeout", "sslmode"):
        assert name in str(info.value)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        pytest.param("table=a-b", "table name", id="table-dash"),
        pytest.param("table=" + "t" * 60, "table name", id="table-long"),
        pytest.param("statement_timeout=0", "positive", id="timeout-zero"),
        pytest.param("max_size=x", "invalid literal", id="not-a-number"),
        pytest.param("min_size=5&max_size=2", "min_size", id="sizes"),
        pytest.param("prepared=maybe", "true or false", id="bad-boolean"),
    ],
)
def test_bad_parameters_are_config_errors(query: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(f"postgresql://h/db?{query}")


def test_password_never_shows(postgres_server: PostgresServer) -> None:
    port = free_port()
    store = open_store(
        f"postgres://ada:s3cret@127.0.0.1:{port}/db?pool_timeout=0.5&breaker=off"
    )
    try:
        assert store.url == f"postgres://ada:***@127.0.0.1:{port}/db?pool_timeout=0.5"
        assert "s3cret" not in repr(store)
        with pytest.raises(StoreUnavailable) as info:
            store.load(KEY, now=NOW)
        assert "s3cret" not in str(info.value) and "refused" in str(info.value).lower()
        assert isinstance(info.value.__cause__, psycopg.Error), "the cause is chained"
    finally:
        store.close()


# -- one statement per operation -------------------------------------------------------


class CountingCursor(psycopg.Cursor[Any]):
    executed = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.executed += 1
        return super().execute(*args, **kwargs)


def statements(action: Any) -> int:
    before = CountingCursor.executed
    action()
    return CountingCursor.executed - before


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


def create_in_new_table(url: str, key_hash: str, start: Barrier) -> None:
    """Open the store on a table nobody created yet, and create at the same moment."""
    store = open_store(url)
    try:
        start.wait(60)
        assert store.create(RecordKey("app", key_hash), new({"k": b"v"}), now=NOW)
    finally:
        store.close()


def test_many_processes_create_the_table_on_first_use_at_once(
    postgres_server: PostgresServer, table: str
) -> None:
    url = f"{postgres_server.url}?table={table}"
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


def test_a_dropped_table_is_created_again(postgres_server: PostgresServer, table: str) -> None:
    store = open_store(f"{postgres_server.url}?table={table}")
    try:
        assert store.create(KEY, new(), now=NOW)
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{table}"')
        assert store.load(KEY, now=NOW).status is LoadStatus.ABSENT
        assert store.create(KEY, new(), now=NOW)
    finally:
        store.close()


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


# -- timeouts ------------------------------------------------------------------------------


def test_a_row_locked_elsewhere_ends_in_the_statement_timeout(
    postgres_server: PostgresServer, table: str
) -> None:
    url = f"{postgres_server.url}?table={table}&statement_timeout=0.5&breaker=off"
    store = open_store(url)
    try:
        store.create(KEY, new(), now=NOW)
        with psycopg.connect(postgres_server.url) as blocker:
            blocker.execute(f'SELECT 1 FROM "{table}" FOR UPDATE')  # held until rollback
            with pytest.raises(StoreUnavailable, match="due to (statement|lock) timeout"):
                store.apply(KEY, Change(IDLE, set={"a": b"1"}), now=NOW)
            blocker.rollback()
        assert store.apply(KEY, Change(IDLE, set={"a": b"1"}), now=NOW).status is ApplyStatus.OK
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
