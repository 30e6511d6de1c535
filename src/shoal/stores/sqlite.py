"""``sqlite:///path``: the embedded default, shared by every process of one host.

WAL mode lets readers run beside one writer. Every operation runs the shared
pure step of ``_state.py`` on a row read earlier and writes its outcome back
with ONE autocommit compare-and-set statement, which only writes while the
row is still exactly the one the step saw (``_sql.SQLITE_SWAP``); a load
reads that row with one plain SELECT, and each thread remembers the last rows
it read or wrote, so a request (load, then save) costs one SELECT and one
UPDATE. When the row changed meanwhile, or the step on a remembered row
would write nothing, the operation runs again inside a ``BEGIN IMMEDIATE``
transaction that reads the row, runs the step and writes the row back (as
every write did before; a key whose compare-and-set just missed goes there
directly for its next few writes), so two processes can never interleave
inside one operation either way. Rejected: the transaction for every write
(four statements, and the write lock held across a round of Python); a
``version`` check instead of the whole row (see ``_sql.SQLITE_SWAP``).
SQLite has no cross-process notification, so lease waiters back off with
jitter (see ``wait_unlocked``).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote, unquote

from ..errors import ConfigError, NotAStore, StoreUnavailable
from . import _sql
from ._local import LocalStore, Step
from ._state import DELETE, StoredRecord, load_step, pack_fields, unpack_fields
from ._url import mask_url, query_options, seconds, split_url, url_path
from .base import Ended, LoadResult, LockRequest, NewRecord, RecordInfo, RecordKey, Touch

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_OPTIONS: dict[str, Callable[[str], Any]] = {"busy_timeout": seconds(allow_zero=True)}


# Rows of one thread remembered for the compare-and-set (see _Seen): enough
# for a request's load and save, and a few interleaved sessions.
_SEEN_ROWS = 16

# After a compare-and-set of a key missed (another process wrote the row
# between this thread's read and write), this thread's next writes of that
# key go straight to the transaction, this many times: under contention on one
# session a compare-and-set mostly misses, and each miss is one more write
# lock taken for nothing (measured: 8 processes on one session lost ~20% of
# their throughput without this). Then it tries again.
_SKIPS_AFTER_MISS = 8

Row = tuple[Any, ...]
"""The ``_sql._COLUMNS`` of one row, as a SELECT returns them."""


class _Seen(NamedTuple):
    """A row as this thread last read or wrote it (``row`` None: no row)."""

    row: Row | None
    rec: StoredRecord | None


_ABSENT = _Seen(None, None)


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


def _database_path(url: str) -> str:
    """The database file of a ``sqlite:`` URL, refusing the two classic traps.

    ``sqlite:///name.db`` is the absolute ``/name.db`` here (paths read as in
    ``file:///``), but SQLAlchemy and Flask-Session users read three slashes
    as relative: run as root, it made ``/name.db``. So a database directly in
    the filesystem root is refused, with both spellings in the message; a
    file in ``/`` was never a sensible place for one. And ``:memory:`` is a
    database per SQLite connection, while this store opens one per thread
    and process: sessions would vanish between requests.
    """
    parts = split_url(url)
    if ":memory:" in (parts.netloc, os.path.basename(unquote(parts.path))):
        raise ConfigError(
            f"{mask_url(url)}: SQLite's :memory: is a separate database per connection, and "
            "this store opens one connection per thread and process, so sessions would "
            "vanish; use memory:// for sessions in one process, or a file: "
            "sqlite:///var/lib/app/sessions.db"
        )
    path = url_path(url)
    absolute = os.path.abspath(path)
    if os.path.dirname(absolute) == "/" and not os.path.isdir(absolute):
        name = os.path.basename(absolute)
        cwd = "" if os.path.isabs(path) else " (a relative path, and the working directory is /)"
        raise ConfigError(
            f"{mask_url(url)}: the database file would be {absolute}, directly in the "
            f"filesystem root{cwd}. sqlite:/// is followed by an absolute path, as in "
            f"sqlite:///var/lib/app/{name}; for a path relative to the working directory "
            f"write sqlite:{name} (no slashes)"
        )
    return path


class SQLiteStore(LocalStore):
    """One SQLite database file, one connection per thread and process."""

    def __init__(self, path: str, *, busy_timeout: float = 10.0, url: str | None = None) -> None:
        if os.path.isdir(path):
            # Else every operation fails ("unable to open database file"): a 503 per request.
            inside = os.path.join(os.path.abspath(path), "sessions.db")
            raise ConfigError(
                f"{url or path}: {os.path.abspath(path)} is a directory; name the database "
                f"file inside it, e.g. sqlite://{inside}"
            )
        self.path = path
        self.url = url or f"sqlite://{os.path.abspath(path)}"
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._existing_only = False  # see require_existing()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        options = query_options(url, _OPTIONS)
        return cls(_database_path(url), url=url, **options)

    def migrate(self) -> None:
        """Create the database file, its table and index now (any connection does)."""
        self._conn()

    def require_existing(self) -> None:
        """Use only a database that holds shoal's table; create and switch nothing.

        From now on a connection opens the file as it is: it never creates the
        file, the table or the index, nor switches the journal mode (a database
        in rollback-journal mode stays so). ``NotAStore`` now if the file is no
        SQLite database or has no session table: the admin commands may be
        pointed at an application's own database (``shoal migrate`` is the
        deliberate way to add the table).
        """
        self.close()
        self._existing_only = True
        self._conn()

    # -- connections ------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        # A connection must not cross fork(): reopen in a child process. Nor
        # outlive its file: a connection to a database file that was deleted
        # or replaced keeps using the unlinked file, unseen by every other
        # process, so a changed inode reopens it (one stat per operation).
        pid = os.getpid()
        if conn is not None and self._local.pid == pid:
            if self._file_id() != self._local.file_id:
                conn.close()
                conn = self._local.conn = None
        if conn is None or self._local.pid != pid:
            conn = self._connect()
            self._local.conn, self._local.pid = conn, pid
            self._local.file_id = self._file_id()
            self._local.seen = {}
            self._local.missed = {}
        return conn

    def _file_id(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def _connect(self) -> sqlite3.Connection:
        if self._existing_only:
            return self._connect_existing()
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

    def _connect_existing(self) -> sqlite3.Connection:
        """A connection to the database as it is (see ``require_existing``)."""
        try:
            # mode=rw: the file must exist; SQLite would otherwise create it.
            conn = sqlite3.connect(
                f"file:{quote(os.path.abspath(self.path))}?mode=rw",
                uri=True,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=True,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        try:
            (found,) = conn.execute(_sql.SQLITE_TABLE_EXISTS).fetchone()
        except sqlite3.OperationalError as exc:  # busy, I/O: the store is there
            conn.close()
            raise StoreUnavailable(self.url, str(exc)) from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            conn.close()
            raise NotAStore(
                self.url, f"the file is no SQLite database ({exc}); check --store"
            ) from exc
        if not found:
            conn.close()
            raise NotAStore(
                self.url,
                "the database has no shoal_sessions table; check --store, or add the "
                "table with `shoal migrate` if this database is meant to hold sessions",
            )
        return conn

    # -- one step, one statement ---------------------------------------------

    def _seen(self) -> dict[tuple[str, str], _Seen]:
        """This thread's remembered rows (of its current connection), by key."""
        seen: dict[tuple[str, str], _Seen] = self._local.seen
        return seen

    def _remember(self, key: RecordKey, seen: _Seen) -> None:
        rows = self._seen()
        where = (key.app_id, key.id_hash)  # a tuple hashes in C, a RecordKey in Python
        rows.pop(where, None)
        rows[where] = seen
        if len(rows) > _SEEN_ROWS:
            del rows[next(iter(rows))]

    def _forget(self, key: RecordKey) -> None:
        self._seen().pop((key.app_id, key.id_hash), None)

    def _contended(self, key: RecordKey) -> bool:
        """Whether a recent miss on ``key`` sends this write to the transaction."""
        missed: dict[tuple[str, str], int] = self._local.missed
        where = (key.app_id, key.id_hash)
        left = missed.get(where)
        if not left:
            return False
        if left > 1:
            missed[where] = left - 1
        else:
            del missed[where]
        return True

    def _missed(self, key: RecordKey) -> None:
        missed: dict[tuple[str, str], int] = self._local.missed
        missed[(key.app_id, key.id_hash)] = _SKIPS_AFTER_MISS
        if len(missed) > _SEEN_ROWS:
            del missed[next(iter(missed))]

    def _step(self, key: RecordKey, step: Step[T], *, notify: bool = False) -> T:
        """Run ``step`` on the row: on the remembered row when it still holds."""
        conn = self._conn()
        seen = self._seen().get((key.app_id, key.id_hash))
        return self._attempt(conn, key, step, seen, fresh=False)

    def _attempt(
        self,
        conn: sqlite3.Connection,
        key: RecordKey,
        step: Step[T],
        seen: _Seen | None,
        *,
        fresh: bool,
    ) -> T:
        """``step`` on ``seen`` written by one compare-and-set, else in a transaction.

        ``fresh``: ``seen`` was read by this very operation, so an outcome
        that writes nothing is the answer as of that read (a consistent
        snapshot). A remembered row may be old: only a write, which the
        compare-and-set checks, is trusted from it.
        """
        try:
            if seen is not None:
                result, outcome = step(seen.rec)
                if outcome is None and fresh:
                    return result
                if (
                    isinstance(outcome, StoredRecord)
                    and not self._contended(key)
                    and self._swap(conn, key, seen, outcome)
                ):
                    return result
            return self._transact(conn, key, step)
        except sqlite3.Error as exc:
            self._forget(key)
            raise StoreUnavailable(self.url, str(exc)) from exc

    def _swap(
        self, conn: sqlite3.Connection, key: RecordKey, old: _Seen, new: StoredRecord
    ) -> bool:
        """Write ``new`` iff the row is still ``old`` (one statement); remember it."""
        if old.rec is not None and old.row is not None and (
            new.fields is old.rec.fields and new.field_versions is old.rec.field_versions
        ):
            blob = old.row[-1]  # a touch or a lease: the fields are the same object
        else:
            blob = pack_fields(new.fields, new.field_versions)
        row = _row(new, blob)
        if old.row is None:
            cursor = conn.execute(_sql.SQLITE_INSERT, (key.app_id, key.id_hash, *row))
        else:
            changed = tuple(i for i, value in enumerate(row) if value != old.row[i]) or (0,)
            cursor = conn.execute(
                _swap_statement(changed),
                (*(row[i] for i in changed), key.app_id, key.id_hash, *old.row),
            )
        if cursor.rowcount != 1:
            self._forget(key)
            self._missed(key)
            return False
        self._remember(key, _Seen(row, _as_read(new, row)))
        return True

    def _transact(self, conn: sqlite3.Connection, key: RecordKey, step: Step[T]) -> T:
        """Read the row, run ``step`` and write its outcome in BEGIN IMMEDIATE."""
        with _transaction(conn, immediate=True):
            row = conn.execute(_sql.SQLITE_SELECT, (key.app_id, key.id_hash)).fetchone()
            rec = _row_to_record(row)
            result, outcome = step(rec)
            if outcome is DELETE:
                conn.execute(_sql.SQLITE_DELETE, (key.app_id, key.id_hash))
                seen = _ABSENT
            elif isinstance(outcome, StoredRecord):
                new_row = _row(outcome, pack_fields(outcome.fields, outcome.field_versions))
                conn.execute(_sql.SQLITE_UPSERT, (key.app_id, key.id_hash, *new_row))
                seen = _Seen(new_row, _as_read(outcome, new_row))
            else:
                seen = _Seen(row, rec)
        self._remember(key, seen)
        return result

    # -- the contract -----------------------------------------------------

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        # One plain read; a write (a due touch, a lease) only when the step
        # asks for one, as a compare-and-set on the row just read.
        conn = self._conn()
        try:
            row = conn.execute(_sql.SQLITE_SELECT, (key.app_id, key.id_hash)).fetchone()
        except sqlite3.Error as exc:
            self._forget(key)
            raise StoreUnavailable(self.url, str(exc)) from exc
        seen = _Seen(row, _row_to_record(row))
        self._remember(key, seen)
        return self._attempt(
            conn, key, lambda r: load_step(r, now=now, touch=touch, lock=lock), seen, fresh=True
        )

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        # A new id is as good as never taken: try the step on "no row" first
        # (an INSERT that does nothing when some row holds the key, after
        # which the transaction reads that row and refuses).
        self._conn()
        if (key.app_id, key.id_hash) not in self._seen():
            self._remember(key, _ABSENT)
        return super().create(key, record, now=now, lock=lock)

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

    def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As ``purge``, returning what each deleted record held (one DELETE ... RETURNING)."""
        from ..cluster._statements import SQLITE_PURGE_RETURNING

        try:
            with _transaction(self._conn(), immediate=True) as conn:
                rows = conn.execute(
                    SQLITE_PURGE_RETURNING, (now - grace, limit, now - grace)
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        return [
            Ended(RecordKey(app_id, id_hash), unpack_fields(blob)[0], bool(invalidated))
            for app_id, id_hash, invalidated, blob in rows
        ]

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


_SWAPS: dict[tuple[int, ...], str] = {}


def _swap_statement(changed: tuple[int, ...]) -> str:
    """SQLITE_SWAP setting the columns at these indexes of ``_sql.SQLITE_COLUMNS``."""
    statement = _SWAPS.get(changed)
    if statement is None:
        columns = ", ".join(
            _sql.SQLITE_SWAP_SET.format(column=_sql.SQLITE_COLUMNS[i]) for i in changed
        )
        statement = _SWAPS[changed] = _sql.SQLITE_SWAP.format(set=columns)
    return statement


def _row(rec: StoredRecord, blob: bytes) -> Row:
    """``rec`` as the columns a SELECT will return once it is written."""
    return (
        rec.version,
        float(rec.created),
        float(rec.accessed),
        float(rec.expires),
        float(rec.absolute_expires),
        int(rec.invalidated),
        rec.lease_token,
        float(rec.lease_until),
        blob,
    )


def _as_read(rec: StoredRecord, row: Row) -> StoredRecord:
    """``rec`` as reading ``row`` back would give it, without unpacking the blob."""
    return StoredRecord(
        version=row[0],
        created=row[1],
        accessed=row[2],
        expires=row[3],
        absolute_expires=row[4],
        fields=rec.fields,
        field_versions=rec.field_versions,
        invalidated=bool(row[5]),
        lease_token=row[6],
        lease_until=row[7],
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
