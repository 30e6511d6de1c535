"""``sqlite:///path``: the embedded default, shared by every process of one host.

WAL mode lets readers run beside one writer. Every operation runs the shared
pure step of ``state.py`` on a row read earlier and writes its outcome back
with ONE autocommit compare-and-set UPDATE, which only writes while the row
still has the revision, version, times and lease the step saw
(``_sql.SQLITE_SAVE``); a load reads the row with one plain SELECT, and
each thread remembers the last rows it read or wrote, so a request (load,
then save) costs one SELECT and one UPDATE (and the lease's UPDATE under
``serialized``), and a remembered row read again unchanged is not unpacked
again. When the row
changed meanwhile, or the step on a remembered row would write nothing, the
operation runs again inside a ``BEGIN IMMEDIATE`` transaction that reads
the row, runs the step and writes the row back (a key whose compare-and-set
just missed goes there directly for its next few writes), so two processes
can never interleave inside one operation either way. Rejected: the
transaction for every write (four statements, and the write lock held
across a round of Python); comparing the whole row and blob (what this
store did first: binding and comparing the blob cost more than the write;
see ``_sql.SQLITE_SAVE``). Purge finds rows through ``purge_after``, a
lower bound of ``expires`` that moves rarely (``_PURGE_SLACK``).

Before every operation a thread's connection is checked against the
database file (one ``stat()``, ~2 µs): a deleted or replaced file is reopened
at once, so the operation after an operator's ``rm sessions.db*`` or ``mv
restored.db sessions.db`` already sees it (a store loss the replica restore
relies on; see docs/decisions.md for the options measured). SQLite has no
cross-process notification, so lease waiters back off with jitter (see
``wait_unlocked``).
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
from .state import DELETE, StoredRecord, load_step, pack_fields, unpack_fields
from ._url import mask_url, query_options, seconds, split_url, url_path
from .base import Ended, LoadResult, LockRequest, NewRecord, RecordInfo, RecordKey, Touch

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_OPTIONS: dict[str, Callable[[str], Any]] = {
    "busy_timeout": seconds(allow_zero=True),
}


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

Where = tuple[str, str]
"""A key as statement parameters: (app_id, id_hash)."""

Check = tuple[Any, ...]
"""The first ``_sql.SQLITE_CHECK`` columns of a row: what a compare-and-set compares."""


class _Seen(NamedTuple):
    """A row as this thread last read or wrote it (``check`` None: no row)."""

    check: Check | None
    rec: StoredRecord | None
    blob: bytes | None
    purge_after: float = 0.0


_ABSENT = _Seen(None, None, None)

# How far ``expires`` may run ahead of the row's ``purge_after`` before a
# write moves it (see _sql.SQLITE_SCHEMA): one index write per session and
# minute of activity instead of one per save; a purge looks in vain at the
# rows expiring within a minute after its cutoff.
_PURGE_SLACK = 60.0


# A connection must not cross fork(): the child's first operation opens its
# own. Counted by a fork hook rather than comparing os.getpid() per
# operation (a system call each time).
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)


class _Thread:
    """One thread's connection to the database, and the rows it remembers."""

    __slots__ = ("conn", "device", "generation", "inode", "missed", "seen")

    def __init__(self, conn: sqlite3.Connection, device: int, inode: int) -> None:
        self.conn = conn
        self.generation = _generation
        self.device, self.inode = device, inode  # of the file it opened (-1: none)
        self.seen: dict[Where, _Seen] = {}
        self.missed: dict[Where, int] = {}


def _seen_of(row: tuple[Any, ...] | None, remembered: _Seen | None) -> _Seen:
    """The row as read; the remembered one when its check is unchanged (no unpacking).

    Equal checks are the same row (see ``_sql.SQLITE_SAVE``): same
    incarnation, same version, so the same fields.
    """
    if row is None:
        return _ABSENT
    check = row[: _sql.SQLITE_CHECK]
    if remembered is not None and remembered.check == check:
        return remembered
    (_, version, accessed, expires, token, until, created, absolute, invalidated, purge_after,
     blob) = row  # fmt: skip
    fields, versions = unpack_fields(blob)
    rec = StoredRecord(
        version, created, accessed, expires, absolute, fields, versions, bool(invalidated),
        token, until,
    )  # fmt: skip
    return _Seen(check, rec, blob, purge_after)


def _new_revision() -> int:
    """A random incarnation number: odd, so never the 0 of rows older than the column."""
    return int.from_bytes(os.urandom(8), "big") >> 1 | 1


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
        """Create the database file, its table and index, or migrate them, now."""
        self._thread()

    def require_existing(self) -> None:
        """Use only a database that holds shoal's table; create and switch nothing.

        From now on a connection opens the file as it is: it never creates the
        file, the table or the index, nor switches the journal mode (a database
        in rollback-journal mode stays so); it only migrates shoal's own table
        of an older layout (its columns and its purge index: ``_migrate``).
        ``NotAStore`` now if the file is no SQLite database or has no session
        table: the admin commands may be pointed at an application's own
        database (``shoal migrate`` is the deliberate way to add the table).
        """
        self.close()
        self._existing_only = True
        self._thread()

    # -- connections ------------------------------------------------------

    def _thread(self) -> _Thread:
        """This thread's connection, (re)opened after a fork or a replaced file."""
        state: _Thread | None = getattr(self._local, "state", None)
        if state is None or state.generation != _generation:
            return self._open()
        # A connection must not outlive its file: one to a database file that
        # was deleted or replaced keeps using the unlinked file, unseen by every
        # other process, so a changed inode reopens it. Looked at before every
        # operation. Rejected: once per second (the file_check cadence, reverted
        # in af7ed69: for up to a second the store served the lost file and a
        # replica restore found the old rows); an fd of our own on the file to
        # fstat() (closing it would drop SQLite's POSIX locks of the process);
        # PRAGMA data_version (twice the cost, and blind to an unlinked file).
        try:
            info = os.stat(self.path)
        except OSError:
            info = None
        if info is None or info.st_ino != state.inode or info.st_dev != state.device:
            state.conn.close()
            return self._open()
        return state

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (as ``_thread``)."""
        return self._thread().conn

    def _open(self) -> _Thread:
        conn = self._connect()
        try:
            info = os.stat(self.path)
            device, inode = info.st_dev, info.st_ino
        except OSError:
            device = inode = -1
        state = self._local.state = _Thread(conn, device, inode)
        return state

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
        try:
            if _outdated(conn):
                _retry_busy(
                    lambda: _migrate_in_transaction(conn),
                    deadline=time.monotonic() + self.busy_timeout,
                )
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(self.url, str(exc)) from exc
        return conn

    # -- remembered rows ----------------------------------------------------

    def _seen(self) -> dict[Where, _Seen]:
        """This thread's remembered rows (of its current connection), by key."""
        return self._thread().seen

    @staticmethod
    def _remember(state: _Thread, where: Where, seen: _Seen) -> None:
        rows = state.seen
        rows.pop(where, None)
        rows[where] = seen
        if len(rows) > _SEEN_ROWS:
            del rows[next(iter(rows))]

    @staticmethod
    def _contended(state: _Thread, where: Where) -> bool:
        """Whether a recent miss on ``where`` sends this write to the transaction."""
        missed = state.missed
        left = missed.get(where)
        if not left:
            return False
        if left > 1:
            missed[where] = left - 1
        else:
            del missed[where]
        return True

    # -- one step, one statement ---------------------------------------------

    def _step(self, key: RecordKey, step: Step[T], *, notify: bool = False) -> T:
        """Run ``step`` on the row: on the remembered row when it still holds."""
        state = self._thread()
        where = (key.app_id, key.id_hash)
        return self._attempt(state, where, step, state.seen.get(where), fresh=False)

    def _attempt(
        self, state: _Thread, where: Where, step: Step[T], seen: _Seen | None, *, fresh: bool
    ) -> T:
        """``step`` on ``seen`` written by one compare-and-set, else in a transaction.

        ``fresh``: ``seen`` was read by this very operation, so an outcome
        that writes nothing is the answer as of that read (a consistent
        snapshot). A remembered row may be old: only a write, which the
        compare-and-set checks, is trusted from it; an answer that writes
        nothing is asked again of the row as it is (one SELECT), a write that
        missed goes to the transaction.
        """
        try:
            if seen is not None:
                result, outcome = step(seen.rec)
                if isinstance(outcome, StoredRecord):
                    if not self._contended(state, where) and self._swap(
                        state, where, seen, outcome
                    ):
                        return result
                    return self._transact(state, where, step)
                if outcome is None and fresh:
                    return result
                if outcome is None:
                    return self._attempt(
                        state, where, step, self._read(state, where), fresh=True
                    )
            return self._transact(state, where, step)
        except sqlite3.Error as exc:
            state.seen.pop(where, None)
            raise StoreUnavailable(self.url, str(exc)) from exc

    def _read(self, state: _Thread, where: Where) -> _Seen:
        """The row as it is now (one SELECT), remembered."""
        row = state.conn.execute(_sql.SQLITE_SELECT, where).fetchone()
        seen = _seen_of(row, state.seen.get(where))
        self._remember(state, where, seen)
        return seen

    def _swap(self, state: _Thread, where: Where, old: _Seen, new: StoredRecord) -> bool:
        """Write ``new`` iff the row still has ``old``'s check (one statement); remember it."""
        seen = _put(state.conn, where, old, new)
        if seen is None:
            state.seen.pop(where, None)
            missed = state.missed
            missed[where] = _SKIPS_AFTER_MISS
            if len(missed) > _SEEN_ROWS:
                del missed[next(iter(missed))]
            return False
        self._remember(state, where, seen)
        return True

    def _transact(self, state: _Thread, where: Where, step: Step[T]) -> T:
        """Read the row, run ``step`` and write its outcome in BEGIN IMMEDIATE."""
        conn = state.conn
        with _transaction(conn, immediate=True):
            row = conn.execute(_sql.SQLITE_SELECT, where).fetchone()
            seen = _seen_of(row, state.seen.get(where))
            result, outcome = step(seen.rec)
            if outcome is DELETE:
                conn.execute(_sql.SQLITE_DELETE, where)
                seen = _ABSENT
            elif isinstance(outcome, StoredRecord):
                written = _put(conn, where, seen, outcome)
                if written is None:  # nothing else writes inside BEGIN IMMEDIATE
                    raise sqlite3.DatabaseError("the row changed inside a write transaction")
                seen = written
        self._remember(state, where, seen)
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
        # asks for one, as a compare-and-set on the row just read. Rejected
        # for a locking load: the compare-and-set on the remembered row without
        # the SELECT (a statement less in one process, but under a non-sticky
        # balancer the row was mostly written by another process since, and a
        # missed compare-and-set costs a write lock and the transaction).
        state = self._thread()
        where = (key.app_id, key.id_hash)
        try:
            seen = self._read(state, where)
        except sqlite3.Error as exc:
            state.seen.pop(where, None)
            raise StoreUnavailable(self.url, str(exc)) from exc
        return self._attempt(
            state,
            where,
            lambda r: load_step(r, now=now, touch=touch, lock=lock),
            seen,
            fresh=True,
        )

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        # A new id is as good as never taken: try the step on "no row" first
        # (an INSERT that does nothing when some row holds the key, after
        # which the transaction reads that row and refuses).
        state = self._thread()
        where = (key.app_id, key.id_hash)
        if where not in state.seen:
            self._remember(state, where, _ABSENT)
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
            rec = _seen_of(row[2:], None).rec
            assert rec is not None
            yield rec.info(RecordKey(row[0], row[1]))

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        try:
            with _transaction(self._conn(), immediate=True) as conn:
                cutoff = now - grace
                cursor = conn.execute(_sql.SQLITE_PURGE, (cutoff, cutoff, limit, cutoff))
                return cursor.rowcount
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc

    def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As ``purge``, returning what each deleted record held (one DELETE ... RETURNING)."""
        cutoff = now - grace
        try:
            with _transaction(self._conn(), immediate=True) as conn:
                rows = conn.execute(
                    _sql.SQLITE_PURGE_RETURNING, (cutoff, cutoff, limit, cutoff)
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc
        return [
            Ended(RecordKey(app_id, id_hash), unpack_fields(blob)[0], bool(invalidated))
            for app_id, id_hash, invalidated, blob in rows
        ]

    def close(self) -> None:
        state: _Thread | None = getattr(self._local, "state", None)
        if state is not None and state.generation == _generation:
            state.conn.close()
        self._local = threading.local()


def _put(conn: sqlite3.Connection, where: Where, old: _Seen, new: StoredRecord) -> _Seen | None:
    """Write ``new`` over ``old`` by one compare-and-set; the row written, None on a miss.

    ``old.check`` None: there was no row, so an INSERT with a new revision
    (which does nothing when some row holds the key). A write that keeps the
    fields and the tombstone flag (a touch, a lease) sends no blob, one that
    changes the lease alone sets nothing else (``_sql.SQLITE_SAVE_LEASE``),
    and ``purge_after`` is named only when it moves (``_PURGE_SLACK``): SQLite
    rewrites the index of every column a SET names.
    """
    check = old.check
    expires = new.expires
    if check is None:
        revision = _new_revision()
        blob = pack_fields(new.fields, new.field_versions)
        purge_after = expires
        cursor = conn.execute(
            _sql.SQLITE_INSERT,
            (*where, revision, new.version, new.accessed, expires, new.lease_token,
             new.lease_until, new.created, new.absolute_expires, int(new.invalidated),
             purge_after, blob),
        )  # fmt: skip
    else:
        revision = check[0]
        rec = old.rec
        assert rec is not None and old.blob is not None
        purge_after = old.purge_after  # what the row holds, unless moved below
        moved = not purge_after <= expires <= purge_after + _PURGE_SLACK
        if (
            new.fields is rec.fields
            and new.field_versions is rec.field_versions
            and new.invalidated == rec.invalidated
            and new.created == rec.created
            and new.absolute_expires == rec.absolute_expires
        ):
            blob = old.blob
            if new.version == rec.version and new.accessed == rec.accessed and (
                expires == rec.expires
            ):
                cursor = conn.execute(
                    _sql.SQLITE_SAVE_LEASE, (new.lease_token, new.lease_until, *where, *check)
                )
            elif moved:
                purge_after = expires
                cursor = conn.execute(
                    _sql.SQLITE_SAVE_META_PURGE,
                    (new.version, new.accessed, expires, new.lease_token, new.lease_until,
                     purge_after, *where, *check),
                )  # fmt: skip
            else:
                cursor = conn.execute(
                    _sql.SQLITE_SAVE_META,
                    (new.version, new.accessed, expires, new.lease_token, new.lease_until,
                     *where, *check),
                )  # fmt: skip
        else:
            blob = pack_fields(new.fields, new.field_versions)
            values = (new.version, new.accessed, expires, new.lease_token, new.lease_until,
                      new.created, new.absolute_expires, int(new.invalidated), blob)  # fmt: skip
            if moved:
                purge_after = expires
                moving = (*values, purge_after)
                cursor = conn.execute(_sql.SQLITE_SAVE_PURGE, (*moving, *where, *check))
            else:
                cursor = conn.execute(_sql.SQLITE_SAVE, (*values, *where, *check))
    if cursor.rowcount != 1:
        return None
    written = (revision, new.version, new.accessed, expires, new.lease_token, new.lease_until)
    return _Seen(written, new, blob, purge_after)


def _outdated(conn: sqlite3.Connection) -> bool:
    """Whether shoal's table lacks a column of this layout (one catalog read)."""
    return len(conn.execute(_sql.SQLITE_LAYOUT).fetchall()) < 2


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring shoal's table of an older layout up to this one (inside BEGIN IMMEDIATE)."""
    present = {name for (name,) in conn.execute(_sql.SQLITE_LAYOUT)}
    for column, statements in (
        ("revision", _sql.SQLITE_ADD_REVISION),
        ("purge_after", _sql.SQLITE_ADD_PURGE_AFTER),
    ):
        if column not in present:
            for statement in statements:
                conn.execute(statement)
    for statement in _sql.SQLITE_INDEXES:
        conn.execute(statement)


def _migrate_in_transaction(conn: sqlite3.Connection) -> None:
    with _transaction(conn, immediate=True):
        _migrate(conn)


def _prepare(conn: sqlite3.Connection) -> None:
    """Put a new connection in WAL mode and make sure the schema exists and is current.

    Every new connection re-checks the schema: a database file that was lost
    and recreated must work again without a restart, and a database of an
    older layout is migrated by the first connection that opens it. The
    journal mode is only switched when it is not WAL yet, because the switch
    needs an exclusive lock that a busy database refuses at once, without
    the busy timeout.
    """
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    with _transaction(conn, immediate=True):
        for statement in _sql.SQLITE_SCHEMA:
            conn.execute(statement)
        _migrate(conn)


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
