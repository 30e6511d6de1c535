"""``mysql://`` (and ``mariadb://``): sessions in one InnoDB table, through PyMySQL.

Same semantics as every store: the contract's pure steps (``state.py``) run
between a locking read and a write of one InnoDB transaction, as SQLite runs
them under ``BEGIN IMMEDIATE``. With multi-statements a write operation costs
two round trips ("START TRANSACTION; SELECT ... FOR UPDATE", then
"UPDATE ...; COMMIT"); a load that needs no lease and no touch is one plain
SELECT; create is one INSERT whose primary key decides.

Sessions run at READ COMMITTED, so a locking read of an absent row takes no
gap lock (two creates of one id cannot deadlock) and InnoDB re-reads the
latest committed row for every locking read and DML. A deadlock (which
rolls the whole transaction back) is retried; any other error drops the
connection (the server rolls back what it held) and becomes
``StoreUnavailable``. ``connect_timeout``, ``read_timeout``,
``write_timeout`` and ``lock_wait_timeout`` bound every wait.

MySQL has no notification a waiter could block on without holding a
connection per lease, so lease waiters back off with jitter (see
``wait_unlocked``). Rejected: ``GET_LOCK`` per session, which would make the
lease holder keep one connection pinned for its whole request.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

import pymysql  # type: ignore[import-untyped,unused-ignore]
from pymysql.constants import CLIENT  # type: ignore[import-untyped,unused-ignore]

from ..errors import ConfigError, NotAStore, StoreUnavailable
from . import _sql
from ._local import LocalStore, Step
from .state import DELETE, StoredRecord, load_step, pack_fields, unpack_fields
from ._url import host_ports, mask_url, query_options, seconds, split_url, table_name
from .base import (
    Ended,
    LoadResult,
    LoadStatus,
    LockRequest,
    NewRecord,
    RecordInfo,
    RecordKey,
    Touch,
)

__all__ = ["MySQLStore"]

T = TypeVar("T")

_DEADLOCK = 1213  # ER_LOCK_DEADLOCK: InnoDB rolled the transaction back
_NO_SUCH_TABLE = 1146  # ER_NO_SUCH_TABLE
_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
_DEADLOCK_RETRIES = 3


# Timeouts stay under a year, as this store always checked.
_SECONDS = seconds(below=31536000)

_TABLE_NAME = table_name(56)

_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": _TABLE_NAME,
    "connect_timeout": _SECONDS,
    "read_timeout": _SECONDS,
    "write_timeout": _SECONDS,
    "lock_wait_timeout": _SECONDS,
    "schema_timeout": _SECONDS,
    "unix_socket": str,
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
}


def _row_to_record(row: tuple[Any, ...] | None) -> StoredRecord | None:
    if row is None:
        return None
    (version, created, accessed, expires, absolute, invalidated, token, until, blob) = row
    fields, versions = unpack_fields(bytes(blob))
    return StoredRecord(
        version=int(version),
        created=float(created),
        accessed=float(accessed),
        expires=float(expires),
        absolute_expires=float(absolute),
        fields=fields,
        field_versions=versions,
        invalidated=bool(invalidated),
        lease_token=token,
        lease_until=float(until),
    )


def _columns(rec: StoredRecord) -> dict[str, Any]:
    return {
        "version": rec.version,
        "created": rec.created,
        "accessed": rec.accessed,
        "expires": rec.expires,
        "absolute_expires": rec.absolute_expires,
        "invalidated": int(rec.invalidated),
        "lease_token": rec.lease_token,
        "lease_until": rec.lease_until,
        "fields": pack_fields(rec.fields, rec.field_versions),
    }


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class MySQLStore(LocalStore):
    """One InnoDB table; one connection per thread and process.

    ``connect_kwargs``: extra keyword arguments for ``pymysql.connect``
    (e.g. ``cursorclass``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str = "root",
        password: str = "",
        database: str,
        url: str | None = None,
        table: str = "shoal_sessions",
        # Short on purpose, as PostgreSQL's (see there): the breaker opens on
        # the first call that fails after a timeout. Rejected: 5/10/10/5 s.
        connect_timeout: float = 2.0,
        read_timeout: float = 2.0,
        write_timeout: float = 2.0,
        lock_wait_timeout: float = 1.0,
        # Creating the table once at first start; DDL may wait on a busy disk.
        schema_timeout: float = 30.0,
        unix_socket: str | None = None,
        ssl: Mapping[str, str] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            _TABLE_NAME(table)
        except ValueError as exc:
            raise ConfigError(f"table={table!r}: {exc}") from None
        if not database:
            raise ConfigError("a mysql:// URL names its database: mysql://user@host:3306/dbname")
        self.url = mask_url(url) if url else f"mysql://{user}@{host}:{port}/{database}"
        self.table = table
        self._connect_args: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "database": database,
            "unix_socket": unix_socket,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "write_timeout": write_timeout,
            # Two statements per round trip (see _sql.py); parameters are
            # escaped by PyMySQL, never spliced by hand.
            "client_flag": CLIENT.MULTI_STATEMENTS,
            "init_command": (
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; "
                f"SET SESSION innodb_lock_wait_timeout = {max(1, round(lock_wait_timeout))}"
            ),
            **({"ssl": dict(ssl)} if ssl else {}),
            **dict(connect_kwargs or {}),
        }
        names = {"table": f"`{table}`", "index": f"`{table}_expires`"}
        self._schema = tuple(s.format(**names) for s in _sql.MYSQL_SCHEMA)
        self._select = _sql.MYSQL_SELECT.format(**names)
        self._begin_select = _sql.MYSQL_BEGIN_SELECT_FOR_UPDATE.format(**names)
        self._update_commit = _sql.MYSQL_UPDATE_COMMIT.format(**names)
        self._delete_commit = _sql.MYSQL_DELETE_COMMIT.format(**names)
        self._insert = _sql.MYSQL_INSERT.format(**names)
        self._delete = _sql.MYSQL_DELETE.format(**names)
        self._list = _sql.MYSQL_LIST.format(**names)
        self._purge = _sql.MYSQL_PURGE.format(**names)
        self._schema_timeout = schema_timeout
        self._local = threading.local()
        self._schema_ready = False
        self._existing_only = False  # see require_existing()

    @classmethod
    def from_url(cls, url: str) -> MySQLStore:
        """``mysql://user:password@host:3306/dbname?table=...&read_timeout=...``."""
        parts = split_url(url)
        if parts.scheme.lower() not in ("mysql", "mariadb"):
            raise ConfigError(f"{mask_url(url)} is not a mysql:// URL")
        options = query_options(url, _OPTIONS)
        ssl = {
            name[4:]: options.pop(name)
            for name in ("ssl_ca", "ssl_cert", "ssl_key")
            if name in options
        }
        hosts = host_ports(url, parts.netloc, default_port=3306)
        if len(hosts) != 1:
            raise ConfigError(f"{mask_url(url)}: a mysql:// URL names one host[:port]")
        host, port = hosts[0]
        return cls(
            host=host or "127.0.0.1",
            port=port,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")),
            url=url,
            ssl=ssl or None,
            **options,
        )

    def __repr__(self) -> str:
        return f"<MySQLStore {self.url} table={self.table}>"

    # -- connections --------------------------------------------------------

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        # A connection must not cross fork(): reconnect in a child process.
        if conn is None or self._local.pid != os.getpid():
            try:
                conn = pymysql.connect(**self._connect_args)
            except (pymysql.MySQLError, OSError) as exc:
                raise StoreUnavailable(self.url, _describe(exc)) from exc
            self._local.conn, self._local.pid = conn, os.getpid()
            if not self._schema_ready:
                if self._existing_only:
                    self._check_table(conn)
                else:
                    self._migrate(conn)
        return conn

    def _drop_connection(self) -> None:
        """Forget this thread's connection after an error; the server rolls back."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == os.getpid():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken; closing is best effort
                pass

    def migrate(self) -> None:
        """Create the table and its index if missing (safe to run concurrently)."""
        self._run(lambda conn: self._migrate(conn))

    def require_existing(self) -> None:
        """Use only a database that holds the table; never create it.

        For the admin commands, which may be pointed at an application's own
        database: ``NotAStore`` now (and whenever the table is found missing)
        instead of the DDL; ``migrate()`` is the deliberate way to add it.
        """
        self._existing_only, self._schema_ready = True, False
        self._drop_connection()
        self._conn()

    def _check_table(self, conn: Any) -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(_sql.MYSQL_TABLE_EXISTS, {"table": self.table})
                found = cur.fetchone()[0]
        except (pymysql.MySQLError, OSError) as exc:
            self._drop_connection()
            raise StoreUnavailable(self.url, _describe(exc)) from exc
        if not found:
            self._drop_connection()
            raise NotAStore(
                self.url,
                f"the database has no {self.table} table; check --store, or add the table "
                "with `shoal migrate` if this database is meant to hold sessions",
            )
        self._schema_ready = True

    def _migrate(self, conn: Any) -> None:
        # On a connection of its own: DDL may wait longer on a busy server
        # than a request's read timeout allows (a first start under load).
        ddl_timeouts = {"read_timeout": self._schema_timeout, "write_timeout": self._schema_timeout}
        try:
            with pymysql.connect(**{**self._connect_args, **ddl_timeouts}) as ddl:
                with ddl.cursor() as cur:
                    for statement in self._schema:
                        cur.execute(statement)
        except (pymysql.MySQLError, OSError) as exc:
            self._drop_connection()
            raise StoreUnavailable(self.url, _describe(exc)) from exc
        self._schema_ready = True

    def _run(self, work: Callable[[Any], T]) -> T:
        """Run ``work(conn)``; retry deadlocks, recreate a dropped table once."""
        recreated = False
        attempt = 0
        while True:
            conn = self._conn()
            try:
                return work(conn)
            except (pymysql.MySQLError, OSError) as exc:
                self._drop_connection()
                code = _code(exc)
                if code == _DEADLOCK and attempt < _DEADLOCK_RETRIES:
                    attempt += 1
                    continue
                if code == _NO_SUCH_TABLE and not recreated:
                    # Dropped under us: recreate it; the failed work changed nothing.
                    recreated, self._schema_ready = True, False
                    continue
                raise StoreUnavailable(self.url, _describe(exc)) from exc

    def _params(self, key: RecordKey) -> dict[str, Any]:
        return {"app_id": key.app_id, "id_hash": key.id_hash}

    def _step(self, key: RecordKey, step: Step[T], *, notify: bool = False) -> T:
        """Run ``step`` on the row inside one transaction (two round trips)."""
        params = self._params(key)

        def work(conn: Any) -> T:
            try:
                with conn.cursor() as cur:
                    cur.execute(self._begin_select, params)
                    cur.nextset()
                    rec = _row_to_record(cur.fetchone())
                    result, outcome = step(rec)
                    if outcome is DELETE:
                        cur.execute(self._delete_commit, params)
                    elif isinstance(outcome, StoredRecord):
                        # Only create writes onto an absent row, and create is
                        # one INSERT of its own (below); every step here updates.
                        assert rec is not None, "a step may not create a record"
                        cur.execute(self._update_commit, {**params, **_columns(outcome)})
                    else:
                        cur.execute(_sql.MYSQL_COMMIT)
                    while cur.nextset():
                        pass
                    return result
            except BaseException:
                # Whatever failed, the transaction must not stay open holding
                # the row lock: dropping the connection rolls it back.
                self._drop_connection()
                raise

        return self._run(work)

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
            # Most loads need no write: answer from one plain read when possible.
            rec = self._run(lambda conn: self._read(conn, key))
            result, outcome = load_step(rec, now=now, touch=touch, lock=None)
            if outcome is None or result.status is not LoadStatus.LOADED:
                return result
        return super().load(key, now=now, touch=touch, lock=lock)

    def _read(self, conn: Any, key: RecordKey) -> StoredRecord | None:
        with conn.cursor() as cur:
            cur.execute(self._select, self._params(key))
            return _row_to_record(cur.fetchone())

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        rec = StoredRecord(
            version=1,
            created=record.created,
            accessed=now,
            expires=record.expires,
            absolute_expires=record.absolute_expires,
            fields=dict(record.fields),
            field_versions={k: 1 for k in record.fields},
        )
        if lock is not None:
            rec.lease_token, rec.lease_until = lock.token, now + lock.lease
        params = {**self._params(key), **_columns(rec)}

        def work(conn: Any) -> bool:
            try:
                with conn.cursor() as cur:
                    cur.execute(self._insert, params)
            except pymysql.err.IntegrityError as exc:
                if _code(exc) == _DUPLICATE_KEY:
                    return False  # any record, even a tombstone, wins (create_step)
                raise
            return True

        return self._run(work)

    def delete(self, key: RecordKey) -> bool:
        def work(conn: Any) -> bool:
            with conn.cursor() as cur:
                return bool(cur.execute(self._delete, self._params(key)))

        return self._run(work)

    def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        # No notification to block on (see the module docs): sleep a jittered
        # slice, bounded by ``timeout``; the caller re-tries its load.
        time.sleep(max(0.0, min(timeout, random.uniform(0.005, 0.05))))

    def records(self, app_id: str | None = None) -> Iterator[RecordInfo]:
        def work(conn: Any) -> list[tuple[Any, ...]]:
            with conn.cursor() as cur:
                cur.execute(self._list, {"app_id": app_id})
                return list(cur.fetchall())

        for row in self._run(work):
            rec = _row_to_record(tuple(row[2:]))
            assert rec is not None
            yield rec.info(RecordKey(row[0], row[1]))

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        def work(conn: Any) -> int:
            with conn.cursor() as cur:
                return int(cur.execute(self._purge, {"cutoff": now - grace, "limit": limit}))

        return self._run(work)

    def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As ``purge``, returning what each deleted record held.

        One transaction: the rows are read ``FOR UPDATE`` and then deleted, so
        no save lands between what is returned and what is deleted.
        """
        from ..cluster._statements import MYSQL_PURGE_DELETE, MYSQL_PURGE_SELECT

        cutoff = now - grace

        def work(conn: Any) -> list[Ended]:
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        MYSQL_PURGE_SELECT.format(table=f"`{self.table}`"),
                        {"cutoff": cutoff, "limit": limit},
                    )
                    cur.nextset()
                    rows = cur.fetchall()
                    if not rows:
                        cur.execute(_sql.MYSQL_COMMIT)
                        return []
                    keys = ", ".join(["(%s, %s)"] * len(rows))
                    args = [a for app_id, id_hash, _, _ in rows for a in (app_id, id_hash)]
                    cur.execute(
                        MYSQL_PURGE_DELETE.format(table=f"`{self.table}`", keys=keys),
                        [*args, cutoff],
                    )
                    while cur.nextset():
                        pass
            except BaseException:
                self._drop_connection()  # never leave the rows locked
                raise
            return [
                Ended(RecordKey(app_id, id_hash), unpack_fields(bytes(blob))[0], bool(invalidated))
                for app_id, id_hash, invalidated, blob in rows
            ]

        return self._run(work)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._local = threading.local()
