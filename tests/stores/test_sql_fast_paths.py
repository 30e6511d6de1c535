"""The one-statement fast paths of the SQL stores, and what they fall back to.

SQLite runs the pure step on a row it read earlier and writes with one
compare-and-set UPDATE (``_sql.SQLITE_SAVE``); PostgreSQL saves and takes
leases with one plain UPDATE (``PG_SAVE``, ``PG_TAKE``) and sends the
classifying statement only when that UPDATE wrote nothing. The contract
suite holds both to the semantics; these tests pin the statements each
costs and the cases where the remembered row or the fast path is stale, so
the fallback has to answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.stores.base import (
    ApplyStatus,
    Change,
    LoadStatus,
    LockRequest,
    NewRecord,
    RecordKey,
    Touch,
)
from shoal.stores.sqlite import SQLiteStore
from tests.stores._sql import IDLE, KEY, NOW, Counting, fresh_table, new

# -- SQLite ------------------------------------------------------------------------------


def traced(store: SQLiteStore) -> list[str]:
    """The statements this thread's connection of ``store`` runs from now on."""
    sent: list[str] = []
    store._conn().set_trace_callback(lambda sql: sent.append(sql.split()[0].upper()))
    return sent


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "s.db")


@pytest.fixture
def store(path: str) -> Iterator[SQLiteStore]:
    store = SQLiteStore(path)
    yield store
    store.close()


@pytest.fixture
def other(path: str) -> Iterator[SQLiteStore]:
    """A second store on the same file: its own connection, its own remembered rows."""
    store = SQLiteStore(path)
    yield store
    store.close()


def test_sqlite_request_is_one_select_and_one_update(store: SQLiteStore) -> None:
    sent = traced(store)
    assert store.create(KEY, new({"a": b"1"}), now=NOW)
    assert sent == ["INSERT"]
    sent.clear()
    loaded = store.load(KEY, now=NOW + 1, touch=Touch(NOW, IDLE))
    assert loaded.status is LoadStatus.LOADED
    assert store.apply(KEY, Change(IDLE, set={"b": b"2"}), now=NOW + 2).status is ApplyStatus.OK
    assert sent == ["SELECT", "UPDATE"]


def test_sqlite_locking_load_is_one_select_and_one_update(store: SQLiteStore) -> None:
    store.create(KEY, new(), now=NOW)
    sent = traced(store)
    lock = LockRequest("tok", 30.0)
    assert store.load(KEY, now=NOW + 1, lock=lock).status is LoadStatus.LOADED
    assert sent == ["SELECT", "UPDATE"]
    sent.clear()
    change = Change(IDLE, set={"a": b"1"}, expect_version=1, lease_token="tok", release=True)
    assert store.apply(KEY, change, now=NOW + 2).status is ApplyStatus.OK
    assert sent == ["UPDATE"]


def test_sqlite_refused_lease_is_one_select(store: SQLiteStore, other: SQLiteStore) -> None:
    store.create(KEY, new(), now=NOW, lock=LockRequest("mine", 30.0))
    sent = traced(other)
    refused = other.load(KEY, now=NOW + 1, lock=LockRequest("theirs", 30.0))
    assert (refused.status, refused.locked_until) == (LoadStatus.LOCKED, NOW + 30.0)
    assert sent == ["SELECT"]


def test_sqlite_save_onto_a_row_changed_elsewhere_merges(
    store: SQLiteStore, other: SQLiteStore
) -> None:
    store.create(KEY, new({"a": b"1"}), now=NOW)
    store.load(KEY, now=NOW + 1)  # remembered: version 1
    assert other.apply(KEY, Change(IDLE, set={"b": b"2"}), now=NOW + 2).version == 2
    sent = traced(store)
    result = store.apply(KEY, Change(IDLE, set={"c": b"3"}), now=NOW + 3)
    # The compare-and-set missed, the transaction merged onto the newest row.
    assert (result.status, result.version) == (ApplyStatus.OK, 3)
    assert sent == ["UPDATE", "BEGIN", "SELECT", "UPDATE", "COMMIT"]
    record = other.load(KEY, now=NOW + 4).record
    assert record is not None
    assert record.fields == {"a": b"1", "b": b"2", "c": b"3"}
    assert record.field_versions == {"a": 1, "b": 2, "c": 3}


def test_sqlite_after_a_miss_a_contended_key_skips_the_compare_and_set(
    store: SQLiteStore, other: SQLiteStore
) -> None:
    store.create(KEY, new(), now=NOW)
    store.load(KEY, now=NOW + 1)
    other.apply(KEY, Change(IDLE, set={"b": b"2"}), now=NOW + 2)
    store.apply(KEY, Change(IDLE, set={"c": b"3"}), now=NOW + 3)  # the miss
    sent = traced(store)
    for i in range(8):  # _SKIPS_AFTER_MISS
        store.load(KEY, now=NOW + 4)
        store.apply(KEY, Change(IDLE, set={"c": b"%d" % i}), now=NOW + 4)
        assert sent == ["SELECT", "BEGIN", "SELECT", "UPDATE", "COMMIT"]
        sent.clear()
    store.load(KEY, now=NOW + 5)
    store.apply(KEY, Change(IDLE, set={"c": b"9"}), now=NOW + 5)
    assert sent == ["SELECT", "UPDATE"]  # and then it tries again


def test_sqlite_recreated_row_with_the_same_times_is_not_the_remembered_one(
    store: SQLiteStore, other: SQLiteStore
) -> None:
    """Deleted and created again at the same instant: same version, same times.

    Only the ``revision`` drawn at INSERT tells the two rows apart; a
    version-only check would write the old fields back.
    """
    record = NewRecord(NOW, NOW + IDLE, NOW + 10 * IDLE, {"old": b"1"})
    store.create(KEY, record, now=NOW)
    store.load(KEY, now=NOW)
    assert other.delete(KEY)
    assert other.create(KEY, NewRecord(NOW, NOW + IDLE, NOW + 10 * IDLE, {"new": b"2"}), now=NOW)
    assert store.apply(KEY, Change(IDLE, set={"c": b"3"}), now=NOW).version == 2
    loaded = other.load(KEY, now=NOW).record
    assert loaded is not None
    assert loaded.fields == {"new": b"2", "c": b"3"}


@pytest.mark.parametrize(
    ("meanwhile", "status"),
    [
        pytest.param(lambda s: s.invalidate(KEY, now=NOW + 2), ApplyStatus.GONE, id="invalidated"),
        pytest.param(lambda s: s.delete(KEY), ApplyStatus.GONE, id="deleted"),
        pytest.param(
            lambda s: s.apply(KEY, Change(IDLE, set={"a": b"2"}), now=NOW + 2),
            ApplyStatus.CONFLICT,
            id="changed",
        ),
    ],
)
def test_sqlite_stale_remembered_row_answers_as_of_now(
    store: SQLiteStore, other: SQLiteStore, meanwhile: Any, status: ApplyStatus
) -> None:
    store.create(KEY, new({"a": b"1"}), now=NOW)
    store.load(KEY, now=NOW + 1)
    meanwhile(other)
    change = Change(IDLE, set={"a": b"3"}, expect_fields={"a": 1})
    assert store.apply(KEY, change, now=NOW + 3).status is status


def test_sqlite_lease_taken_elsewhere_since_the_load_is_lost(
    store: SQLiteStore, other: SQLiteStore
) -> None:
    store.create(KEY, new(), now=NOW)
    assert store.load(KEY, now=NOW + 1, lock=LockRequest("mine", 5.0)).status is LoadStatus.LOADED
    # The lease ran out; another request took it.
    assert other.load(KEY, now=NOW + 7, lock=LockRequest("theirs", 30.0)).status is (
        LoadStatus.LOADED
    )
    change = Change(IDLE, set={"a": b"1"}, expect_version=1, lease_token="mine", release=True)
    assert store.apply(KEY, change, now=NOW + 8).status is ApplyStatus.LOCK_LOST


def test_sqlite_touch_sends_no_fields(store: SQLiteStore) -> None:
    store.create(KEY, new({"a": b"x" * 1000}), now=NOW)
    sent: list[str] = []
    store._conn().set_trace_callback(sent.append)
    loaded = store.load(KEY, now=NOW + 200, touch=Touch(NOW + 100, IDLE))
    assert loaded.record is not None and loaded.record.accessed == NOW + 200
    assert len(sent) == 2
    assignments, checks = " ".join(sent[1].split()).split(" WHERE ")
    assert assignments.startswith("UPDATE shoal_sessions SET version = 1, accessed = ")
    assert "fields" not in assignments  # unchanged: not sent again
    assert "fields" not in checks.lower()  # nor compared: revision and version tell


def test_sqlite_lease_alone_sets_only_the_lease(store: SQLiteStore) -> None:
    """A lease taken by a load not due a touch names neither the times nor the blob.

    SQLite rewrites the index on ``expires`` whenever a SET names the column.
    """
    store.create(KEY, new({"a": b"1"}), now=NOW)
    sent: list[str] = []
    store._conn().set_trace_callback(sent.append)
    lock = LockRequest("tok", 30.0)
    assert store.load(KEY, now=NOW + 1, touch=Touch(NOW, IDLE), lock=lock).status is (
        LoadStatus.LOADED
    )
    assignments = " ".join(sent[1].split()).split(" WHERE ")[0]
    assert assignments == (
        f"UPDATE shoal_sessions SET lease_token = 'tok', lease_until = {NOW + 31.0!r}"
    )
    sent.clear()
    store.unlock(KEY, "tok")
    assignments = " ".join(sent[0].split()).split(" WHERE ")[0]
    assert assignments == "UPDATE shoal_sessions SET lease_token = NULL, lease_until = 0.0"


def _purge_after(path: str) -> float:
    check = sqlite3.connect(path)
    try:
        (value,) = check.execute("SELECT purge_after FROM shoal_sessions").fetchone()
    finally:
        check.close()
    return float(value)


def test_sqlite_purge_after_moves_only_past_the_slack(path: str, store: SQLiteStore) -> None:
    """A save names ``purge_after`` (and so writes its index) only when it has to.

    It stays a lower bound of ``expires``: moved when ``expires`` ran a minute
    ahead, or fell below it (a shortened lifetime).
    """
    store.create(KEY, new({"a": b"1"}), now=NOW)
    assert _purge_after(path) == NOW + IDLE
    sent: list[str] = []
    store._conn().set_trace_callback(sent.append)
    for now, idle, named, expected in [
        (NOW + 30, IDLE, False, NOW + IDLE),  # expires 30 s ahead: within the slack
        (NOW + 61, IDLE, True, NOW + 61 + IDLE),  # 61 s ahead: moved
        (NOW + 62, 10.0, True, NOW + 72),  # expires fell below it: moved down
    ]:
        sent.clear()
        change = Change(idle, set={"a": b"%d" % now})
        assert store.apply(KEY, change, now=now).status is ApplyStatus.OK
        assert ("purge_after" in sent[0]) is named, sent
        assert _purge_after(path) == expected


def test_sqlite_lease_alone_leaves_a_lagging_purge_after_to_the_next_save(
    path: str, store: SQLiteStore
) -> None:
    """A row the old code inserted (purge_after 0): a lease write leaves it, the save moves it."""
    from shoal.stores.state import pack_fields

    store.migrate()
    check = sqlite3.connect(path, isolation_level=None)
    try:
        check.execute(
            "INSERT INTO shoal_sessions (app_id, id_hash, version, created, accessed, expires,"
            " absolute_expires, fields) VALUES (?, ?, 1, ?, ?, ?, ?, ?)",
            (KEY.app_id, KEY.id_hash, NOW, NOW, NOW + IDLE, NOW + 10 * IDLE,
             pack_fields({"a": b"1"}, {"a": 1})),
        )  # fmt: skip
    finally:
        check.close()
    lock = LockRequest("tok", 30.0)
    assert store.load(KEY, now=NOW + 1, lock=lock).status is LoadStatus.LOADED
    assert _purge_after(path) == 0.0
    change = Change(IDLE, set={"a": b"2"}, lease_token="tok", release=True)
    assert store.apply(KEY, change, now=NOW + 2).status is ApplyStatus.OK
    assert _purge_after(path) == NOW + 2 + IDLE


def test_sqlite_purge_reads_the_purge_index_and_finds_a_lagging_row(
    path: str, store: SQLiteStore
) -> None:
    store.create(KEY, new({"a": b"1"}), now=NOW)
    store.apply(KEY, Change(IDLE, set={"a": b"2"}), now=NOW + 30)  # purge_after lags 30 s
    check = sqlite3.connect(path)
    try:
        plan = " ".join(str(row) for row in check.execute(
            "EXPLAIN QUERY PLAN SELECT app_id, id_hash FROM shoal_sessions"
            " WHERE purge_after <= ? AND expires <= ? LIMIT ?", (NOW, NOW, 10)
        ))  # fmt: skip
    finally:
        check.close()
    assert "USING INDEX shoal_sessions_purge" in plan
    expired = NOW + 30 + IDLE
    assert store.purge(now=expired - 1, grace=0) == 0, "not expired yet"
    assert store.purge(now=expired, grace=0) == 1


def test_sqlite_remembers_a_bounded_number_of_rows(store: SQLiteStore) -> None:
    for i in range(100):
        key = RecordKey("app", f"{i:064x}")
        store.create(key, new(), now=NOW)
        store.load(key, now=NOW)
    assert len(store._seen()) <= 16


def test_sqlite_replaced_file_forgets_the_remembered_rows(path: str) -> None:
    store = SQLiteStore(path)
    store.create(KEY, new({"a": b"1"}), now=NOW)
    store.load(KEY, now=NOW + 1)
    Path(path).unlink()
    for suffix in ("-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    assert store.apply(KEY, Change(IDLE, set={"b": b"2"}), now=NOW + 2).status is ApplyStatus.GONE
    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT count(*) FROM shoal_sessions").fetchone() == (0,)
    finally:
        check.close()
        store.close()


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg(postgres_server: Any) -> Iterator[tuple[Any, type[Counting]]]:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    import psycopg

    from shoal.stores.postgresql import PostgresStore

    class CountingCursor(Counting, psycopg.Cursor[Any]):
        pass

    for table in fresh_table(postgres_server.url):
        store = PostgresStore(
            postgres_server.url, table=table, connect_kwargs={"cursor_factory": CountingCursor}
        )
        store.load(RecordKey("app", "0" * 64), now=NOW)  # creates the table
        try:
            yield store, CountingCursor
        finally:
            store.close()


def test_postgres_refused_save_says_why_in_a_second_statement(
    pg: tuple[Any, type[Counting]],
) -> None:
    store, cursor = pg
    store.create(KEY, new({"a": b"1"}), now=NOW)
    conflicting = Change(IDLE, set={"a": b"2"}, expect_fields={"a": 7})
    result: list[Any] = []
    assert cursor.calls(lambda: result.append(store.apply(KEY, conflicting, now=NOW + 1))) == 2
    assert (result[0].status, result[0].conflicts) == (ApplyStatus.CONFLICT, ("a",))
    fenced = Change(IDLE, set={"a": b"2"}, lease_token="nobody")
    assert store.apply(KEY, fenced, now=NOW + 2).status is ApplyStatus.LOCK_LOST
    assert store.apply(KEY, Change(IDLE), now=NOW + IDLE + 5).status is ApplyStatus.GONE
    assert store.apply(RecordKey("app", "e" * 64), Change(IDLE), now=NOW).status is (
        ApplyStatus.GONE
    )


def test_postgres_refused_lease_says_why_in_a_second_statement(
    pg: tuple[Any, type[Counting]],
) -> None:
    store, cursor = pg
    store.create(KEY, new(), now=NOW, lock=LockRequest("mine", 30.0))
    result: list[Any] = []

    def load(token: str, now: float) -> None:
        result.append(store.load(KEY, now=now, lock=LockRequest(token, 30.0)))

    assert cursor.calls(lambda: load("x", NOW + 1)) == 2
    assert (result[0].status, result[0].locked_until) == (LoadStatus.LOCKED, NOW + 30.0)
    # The holder's own lease is re-entrant, extended, in one statement.
    assert cursor.calls(lambda: load("mine", NOW + 2)) == 1
    assert result[1].status is LoadStatus.LOADED


def test_postgres_saves_match_the_pure_steps(pg: tuple[Any, type[Counting]]) -> None:
    """Every shape of PG_SAVE against MemoryStore (the pure steps), side by side."""
    from shoal.stores.memory import MemoryStore

    store, _ = pg
    memory = MemoryStore()
    changes = [
        Change(IDLE, set={"a": b"1", "b": b"2"}),
        Change(IDLE, set={"c": b"3"}, delete={"a"}),
        Change(IDLE, set={"b": b"2", "d": b"4"}, replace=True),
        Change(IDLE, set={"b": b"5"}, expect_fields={"b": 2, "zz": None}),
        Change(IDLE, set={"b": b"6"}, expect_fields={"b": 1}),
        Change(IDLE, set={"e": b"7"}, expect_version=5),
        Change(IDLE, set={"e": b"8"}, expect_version=99),
        Change(IDLE, delete={"e", "missing"}, release=True),
    ]
    for both in (store, memory):
        both.create(KEY, new({"a": b"0"}), now=NOW)
    for i, change in enumerate(changes):
        now = NOW + 1 + i
        assert store.apply(KEY, change, now=now) == memory.apply(KEY, change, now=now), change
        pg_record = store.load(KEY, now=now).record
        assert pg_record == memory.load(KEY, now=now).record, change


@pytest.mark.parametrize(
    ("change", "status", "fields"),
    [
        pytest.param(
            Change(IDLE, set={"n": b"1"}, expect_fields={"n": 1}),
            ApplyStatus.CONFLICT,
            {"n": b"2"},
            id="per-key-check",
        ),
        pytest.param(
            Change(IDLE, set={"m": b"1"}), ApplyStatus.OK, {"n": b"2", "m": b"1"}, id="merge"
        ),
    ],
)
def test_postgres_save_waiting_for_a_row_rechecks_the_newest_version(
    pg: tuple[Any, type[Counting]],
    postgres_server: Any,
    change: Change,
    status: ApplyStatus,
    fields: dict[str, bytes],
) -> None:
    """A save that waits for a concurrent writer's row lock judges the row it committed.

    PostgreSQL re-evaluates the UPDATE's WHERE and SET on the newest version
    (EvalPlanQual); a NOT EXISTS turned into an anti-join would not be, so
    the per-key check must stay a subplan (see _sql.PG_SAVE_EXPECT).
    """
    import threading
    import time

    import psycopg

    store, _ = pg
    store.create(KEY, new({"n": b"0"}), now=NOW)
    results: list[Any] = []
    with psycopg.connect(postgres_server.url) as blocker:
        blocker.execute(
            f'UPDATE "{store.table}" SET version = 2, fields = %s::jsonb'
            " WHERE app_id = %s AND id_hash = %s",
            ('{"n": {"v": 2, "d": "Mg=="}}', KEY.app_id, KEY.id_hash),
        )  # holds the row until the commit below
        saver = threading.Thread(
            target=lambda: results.append(store.apply(KEY, change, now=NOW + 1))
        )
        saver.start()
        deadline = time.monotonic() + 10
        with psycopg.connect(postgres_server.url, autocommit=True) as watcher:
            while not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone():
                assert time.monotonic() < deadline, "the save never waited for the row"
                time.sleep(0.01)
        blocker.commit()
        saver.join(10)
    assert [r.status for r in results] == [status]
    record = store.load(KEY, now=NOW + 2).record
    assert record is not None and record.fields == fields
