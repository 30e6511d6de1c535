"""``sqlite:///path``: the embedded default, shared by every process of one host.

WAL mode lets readers run beside one writer; every write is one
``BEGIN IMMEDIATE`` transaction that reads the row, runs the shared pure step
and writes the row back, so two processes can never interleave inside one
operation. A plain load that needs no touch and no lock is a single SELECT
outside any write transaction. SQLite has no cross-process notification, so
lease waiters back off with jitter (see ``wait_unlocked``).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import StoreUnavailable
from . import _sql
from ._local import LocalStore, Step
from ._state import DELETE, StoredRecord, load_step, pack_fields, unpack_fields
from ._url import query_options, url_path
from .base import LoadResult, LoadStatus, LockRequest, RecordInfo, RecordKey, Touch

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_OPTIONS: dict[str, Callable[[str], Any]] = {"busy_timeout": float}


def _row_to_record(row: sqlite3.Row | tuple[Any, ...] | None) -> StoredRecord | None:
    if row is None:
        return None
    (version, created, accessed, expires, absolute, invalidated, token, until, blob) = row
    fields, versions = unpack_fields(blob)
    return StoredRecord(
        version=version,
        created=created,
        accessed=accessed,
        expires=expires,
        absolute_expires=absolute,
        fields=fields,
        field_versions=versions,
        invalidated=bool(invalidated),
        lease_token=token,
        lease_until=until,
    )


class SQLiteStore(LocalStore):
    """One SQLite database file, one connection per thread and process."""

    def __init__(self, path: str, *, busy_timeout: float = 10.0, url: str | None = None) -> None:
        self.path = path
        self.url = url or f"sqlite://{os.path.abspath(path)}"
        self.busy_timeout = busy_timeout
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(url_path(url), url=url, **query_options(url, _OPTIONS))

    # -- connections ------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        # A connection must not cross fork(): reopen in a child process. Nor
        # outlive its file: a connection to a database file that was deleted
        # or replaced keeps using the unlinked file, unseen by every other
        # process, so a changed inode reopens it (one stat per operation).
        if conn is not None and self._local.pid == os.getpid():
            if self._file_id() != self._local.file_id:
                conn.close()
                conn = self._local.conn = None
        if conn is None or self._local.pid != os.getpid():
            conn = self._connect()
            self._local.conn, self._local.pid = conn, os.getpid()
            self._local.file_id = self._file_id()
        return conn

    def _file_id(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def _connect(self) -> sqlite3.Connection:
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=True
            )
            _retry_busy(lambda: _prepare(conn), deadline=time.monotonic() + self.busy_timeout)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        return conn

    def _read(self, key: RecordKey) -> StoredRecord | None:
        row = self._conn().execute(_sql.SQLITE_SELECT, (key.app_id, key.id_hash)).fetchone()
        return _row_to_record(row)

    def _step(self, key: RecordKey, step: Step[T], *, notify: bool = False) -> T:
        """Run ``step`` on the row inside one write transaction."""
        conn = self._conn()
        try:
            with _transaction(conn, immediate=True):
                rec = _row_to_record(
                    conn.execute(_sql.SQLITE_SELECT, (key.app_id, key.id_hash)).fetchone()
                )
                result, outcome = step(rec)
                if outcome is DELETE:
                    conn.execute(_sql.SQLITE_DELETE, (key.app_id, key.id_hash))
                elif isinstance(outcome, StoredRecord):
                    conn.execute(_sql.SQLITE_UPSERT, _params(key, outcome))
                return result
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc

    # -- the contract -----------------------------------------------------

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        if lock is None:
            # Most loads need no write: answer from a plain read when possible.
            try:
                result, outcome = load_step(self._read(key), now=now, touch=touch, lock=None)
            except sqlite3.Error as exc:
                raise StoreUnavailable(self.url, str(exc)) from exc
            if outcome is None or result.status is not LoadStatus.LOADED:
                return result
        return self._step(key, lambda r: load_step(r, now=now, touch=touch, lock=lock))

    def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        # No cross-process notification in SQLite: sleep a jittered slice of
        # the remaining time (bounded by ``timeout``), then let the caller re-try.
        time.sleep(min(timeout, random.uniform(0.002, 0.02)))

    def records(self, app_id: str | None = None) -> Iterator[RecordInfo]:
        try:
            rows = self._conn().execute(_sql.SQLITE_LIST, (app_id, app_id)).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        for row in rows:
            rec = _row_to_record(row[2:])
            assert rec is not None
            yield rec.info(RecordKey(row[0], row[1]))

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        try:
            with _transaction(self._conn(), immediate=True) as conn:
                cursor = conn.execute(_sql.SQLITE_PURGE, (now - grace, limit, now - grace))
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local = threading.local()


def _prepare(conn: sqlite3.Connection) -> None:
    """Put a new connection in WAL mode and make sure the schema exists.

    Every new connection re-checks the schema: a database file that was lost
    and recreated must work again without a restart. The journal mode is only
    switched when it is not WAL yet, because the switch needs an exclusive
    lock that a busy database refuses at once, without the busy timeout.
    """
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    with _transaction(conn, immediate=True):
        for statement in _sql.SQLITE_SCHEMA:
            conn.execute(statement)


def _retry_busy(action: Callable[[], None], *, deadline: float) -> None:
    """Run ``action``, again after a short jittered pause while SQLite says busy.

    Opening a database that other processes are creating or recovering can
    answer "database is locked" without waiting on the busy handler; the
    connection's own busy timeout bounds how long this keeps trying.
    """
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(random.uniform(0.001, 0.01))


def _params(key: RecordKey, rec: StoredRecord) -> tuple[Any, ...]:
    return (
        key.app_id,
        key.id_hash,
        rec.version,
        rec.created,
        rec.accessed,
        rec.expires,
        rec.absolute_expires,
        int(rec.invalidated),
        rec.lease_token,
        rec.lease_until,
        pack_fields(rec.fields, rec.field_versions),
    )


class _transaction:
    """BEGIN (IMMEDIATE) ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, conn: sqlite3.Connection, *, immediate: bool = False) -> None:
        self.conn = conn
        self.begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute(self.begin)
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
