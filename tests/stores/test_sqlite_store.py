"""sqlite:// specifics the contract suite cannot see: a busy database, migration, the file check."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.stores.base import NewRecord, RecordKey
from shoal.stores.sqlite import SQLiteStore


def test_first_open_waits_for_a_writer_instead_of_failing(tmp_path: Path) -> None:
    """Switching a new file to WAL while another process writes it used to fail at once.

    SQLite answers "database is locked" to ``PRAGMA journal_mode=WAL`` without
    consulting the busy timeout; CI saw it when four processes opened a fresh
    database together. The store must wait, within its busy timeout.
    """
    path = tmp_path / "s.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO unrelated VALUES (1)")
    release = threading.Timer(0.2, lambda: other.execute("COMMIT"))
    release.start()
    try:
        store = SQLiteStore(str(path), busy_timeout=10.0)
        key = RecordKey("app", "a" * 64)
        assert store.create(key, NewRecord(created=1.0, expires=61.0, absolute_expires=601.0), now=1.0)
    finally:
        release.join()
        other.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# The first layout of shoal_sessions: no ``revision`` column.
_FIRST_LAYOUT = """
    CREATE TABLE shoal_sessions (
        app_id TEXT NOT NULL, id_hash TEXT NOT NULL, version INTEGER NOT NULL,
        created REAL NOT NULL, accessed REAL NOT NULL, expires REAL NOT NULL,
        absolute_expires REAL NOT NULL, invalidated INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT, lease_until REAL NOT NULL DEFAULT 0, fields BLOB NOT NULL,
        PRIMARY KEY (app_id, id_hash)
    ) WITHOUT ROWID
"""


def test_a_database_of_the_first_layout_is_migrated_and_keeps_its_sessions(
    tmp_path: Path,
) -> None:
    from shoal.stores.state import pack_fields
    from shoal.stores.base import ApplyStatus, Change, LoadStatus

    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(_FIRST_LAYOUT)
    old.execute(
        "INSERT INTO shoal_sessions (app_id, id_hash, version, created, accessed, expires,"
        " absolute_expires, fields) VALUES ('app', ?, 3, 1.0, 1.0, 61.0, 601.0, ?)",
        ("a" * 64, pack_fields({"k": b"v"}, {"k": 2})),
    )
    key = RecordKey("app", "a" * 64)
    store = SQLiteStore(str(path))
    try:
        loaded = store.load(key, now=2.0)
        assert loaded.status is LoadStatus.LOADED and loaded.record is not None
        assert (loaded.record.version, dict(loaded.record.fields)) == (3, {"k": b"v"})
        assert store.apply(key, Change(60.0, set={"n": b"1"}), now=3.0).status is ApplyStatus.OK
        columns = [row[1] for row in old.execute("PRAGMA table_info(shoal_sessions)")]
        assert "revision" in columns and "purge_after" in columns
        assert old.execute("SELECT purge_after FROM shoal_sessions").fetchall() == [(61.0,)]
        indexes = {row[1] for row in old.execute("PRAGMA index_list(shoal_sessions)")}
        assert "shoal_sessions_purge" in indexes and "shoal_sessions_expires" not in indexes
        # A process still on the old code inserts without the column: revision 0.
        old.execute(
            "INSERT INTO shoal_sessions (app_id, id_hash, version, created, accessed, expires,"
            " absolute_expires, fields) VALUES ('app', ?, 1, 1.0, 1.0, 61.0, 601.0, ?)",
            ("b" * 64, pack_fields({}, {})),
        )
        assert store.load(RecordKey("app", "b" * 64), now=2.0).status is LoadStatus.LOADED
        # ... and creates its index on expires again when it opens a connection.
        old.execute("CREATE INDEX IF NOT EXISTS shoal_sessions_expires ON shoal_sessions(expires)")
    finally:
        store.close()
        old.close()
    reopened = SQLiteStore(str(path))
    try:
        record = reopened.load(key, now=4.0).record
        assert record is not None and dict(record.fields) == {"k": b"v", "n": b"1"}
        assert record.version == 4
        # Dropped again by the new code's next connection; the old code's row is purged.
        listed = reopened._conn().execute("PRAGMA index_list(shoal_sessions)").fetchall()
        assert {row[1] for row in listed if row[1].startswith("shoal_")} == {"shoal_sessions_purge"}
        assert reopened.purge(now=61.0, grace=0) == 1
    finally:
        reopened.close()


def _delete(path: Path) -> None:
    """``rm sessions.db*``: the file, its WAL and its shared memory."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _replace(path: Path) -> None:
    """``mv restored.db sessions.db``: an empty shoal database renamed over the file.

    The old ``-wal`` and ``-shm`` go first (docs/replica.md): SQLite would
    replay the old WAL onto the new file, and a connection to a moved file
    leaves its WAL behind when it closes.
    """
    other = SQLiteStore(str(path.with_name("restored.db")))
    other.migrate()
    other.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(path.with_name("restored.db"), path)


@pytest.mark.parametrize("lose", [_delete, _replace], ids=["deleted", "replaced"])
def test_the_next_operation_sees_a_lost_file(
    tmp_path: Path, lose: Callable[[Path], None]
) -> None:
    """No cadence: the very next load, save or create of every thread uses the new file."""
    from shoal.stores.base import ApplyStatus, Change, LoadStatus

    path = tmp_path / "s.db"
    store = SQLiteStore(str(path))
    key, other = RecordKey("app", "a" * 64), RecordKey("app", "b" * 64)
    record = NewRecord(created=1.0, expires=61.0, absolute_expires=601.0)
    try:
        assert store.create(key, record, now=1.0)
        assert store.load(key, now=2.0).status is LoadStatus.LOADED
        lose(path)
        assert store.load(key, now=2.0).status is LoadStatus.ABSENT
        assert store.create(key, record, now=2.0)
        lose(path)
        assert store.apply(key, Change(60.0, set={"n": b"1"}), now=3.0).status is ApplyStatus.GONE
        assert store.create(other, record, now=3.0)
        assert [info.key for info in store.records("app")] == [other]
    finally:
        store.close()
