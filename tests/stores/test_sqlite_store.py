"""sqlite:// specifics the contract suite cannot see: opening a busy database."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

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
