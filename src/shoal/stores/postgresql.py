"""``postgresql://``: sessions in one PostgreSQL table, one statement per operation.

Each contract operation is ONE SQL statement on an autocommit connection
from a psycopg_pool pool, so one round trip and one implicit transaction:
the checks of ``state.py`` (live, not a tombstone, lease, record version,
per-key versions) are restated in SQL next to the write they guard (see the
PostgreSQL section of ``_sql.py``). A load that needs no lease and is not
due a touch is one plain SELECT; a due touch adds one UPDATE, at most once
per touch interval per session. A save and a locking load are one plain
UPDATE whose WHERE holds the checks (``PG_SAVE``, ``PG_TAKE``); only when it
writes nothing (gone, conflict, lease lost or held by another) does a second
statement (``PG_APPLY``, ``PG_LOAD_LOCK``) say why, so the request that
succeeds, nearly all of them, pays for no classification it does not need.

Fields are a jsonb map ``key -> {"v": version, "d": base64}``, so a save
sends only the keys it changed and the merge happens inside the statement.

Lease waiters sleep on LISTEN/NOTIFY: unlock, a releasing save, invalidate
and delete call ``pg_notify`` in the same statement (delivered at commit);
each process keeps one listening connection per store, read by a daemon
thread that wakes the waiting threads (``_Waker``).

Every psycopg and pool error becomes ``StoreUnavailable`` with the cause
chained. Nothing waits unbounded: ``connect_timeout`` (connecting),
``pool_timeout`` (waiting for a pooled connection), ``statement_timeout``
(server side, also the row-lock wait) and ``socket_timeout`` (TCP user
timeout and keepalives for a dead network, and a client-side watchdog for a
server that accepts but never answers; libpq has no read timeout).

The store is fork-safe (a child opens its own pool and listener and never
closes the parent's) and thread-safe. ``open_store`` puts it behind the
process-wide circuit breaker of its URL (``_breaker.py``).

The async twin (``postgresql_async.AsyncPostgresStore``) shares all of it
but the sending: both derive from ``PostgresSettings`` (URL parameters,
statements, errors, DDL), whose ``_plan_*`` generators are the contract's
operations written once; a store only runs (or awaits) each statement a
plan yields and sends the answer back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import math
import os
import random
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlunsplit

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import ConfigError, NotAStore, StoreUnavailable
from . import _sql
from .state import StoredRecord, load_step
from ._url import (
    boolean, host_ports, mask_url, query_options, seconds, split_url, table_name,
)
from .base import (
    ApplyResult,
    ApplyStatus,
    Change,
    Ended,
    LoadResult,
    LoadStatus,
    LockRequest,
    NewRecord,
    RecordInfo,
    RecordKey,
    Touch,
)

__all__ = ["PostgresStore"]

log = logging.getLogger("shoal.stores.postgresql")

T = TypeVar("T")
Cursor = psycopg.Cursor[TupleRow]

# What a plan's statement answers with: its first row, every row, or how many
# rows it changed.
ONE, ALL, COUNT = "one", "all", "count"
# One statement of a plan: the SQL, its parameters, what to fetch.
Step = tuple[str, Mapping[str, Any], str]
# An operation written once for both stores: it yields each statement and is
# sent the statement's answer; its return value is the operation's.
Plan = Generator[Step, Any, T]

# A name we quote ourselves; short enough that "<name>_expires" and
# "<name>_wake" stay within PostgreSQL's 63-byte identifiers.

# libpq parameters passed through from the URL query as they are.
_LIBPQ_OPTIONS = (
    "application_name",
    "host",
    "sslcert",
    "sslkey",
    "sslmode",
    "sslrootcert",
    "target_session_attrs",
)


_SECONDS = seconds()

_TABLE_NAME = table_name(48)

_OPTIONS: dict[str, Callable[[str], Any]] = {
    "table": _TABLE_NAME,
    "min_size": int,
    "max_size": int,
    "connect_timeout": _SECONDS,
    "statement_timeout": _SECONDS,
    "pool_timeout": _SECONDS,
    "socket_timeout": _SECONDS,
    "reconnect_timeout": _SECONDS,
    "schema_timeout": _SECONDS,
    "prepared": boolean,
    "lock_poll": _SECONDS,
    **{name: str for name in _LIBPQ_OPTIONS},
}

# Why the latest connection attempt to a conninfo failed: the pool connects in
# its own threads, and a request that times out waiting for a connection
# should still say "connection refused" or "password authentication failed".
_CONNECT_ERRORS: dict[str, str] = {}

# Pools and listeners inherited through fork() are never closed by the child:
# closing would send Terminate on the parent's sockets. They are kept here so
# no finalizer closes them either.
_INHERITED: list[object] = []


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"


# A server that answers and refuses us is not an outage: the URL is wrong.
# libpq gives no SQLSTATE for a failed connection, so these are its FATAL
# texts (server messages are English unless lc_messages says otherwise).
_MISCONFIGURED = (
    "does not exist",  # database "x" / role "x" does not exist
    "authentication failed",  # password, ident, peer, ... authentication failed for user
    "no pg_hba.conf entry",
    "no password supplied",
    "permission denied for database",
    "is not permitted to log in",
)


def _misconfigured(detail: str) -> str | None:
    """The server's own words when ``detail`` (a failed connect) is a configuration problem."""
    if not any(text in detail for text in _MISCONFIGURED):
        return None
    _, fatal, said = detail.partition("FATAL:")
    return " ".join(said.split()) if fatal else detail


class _QuietPool(logging.Filter):
    """Keeps the pool's warnings about shoal's own pools out of the log.

    While a server is down, ``psycopg.pool`` logs a multi-line WARNING per
    connection attempt ("error connecting in 'shoal:...'", "reconnection
    attempt ... failed", "discarding closed connection"): the error the
    store raises already says it (``_CONNECT_ERRORS``), and the circuit
    breaker logs the outage once. They are kept when that logger is set to
    DEBUG, as DEBUG records. Other pools of the application are untouched.
    Rejected: raising the ``psycopg.pool`` logger's level, which would hide
    the application's own pools too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING or not self._ours(record):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    @staticmethod
    def _ours(record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        for arg in args:
            if isinstance(arg, (_Connection, _AsyncConnection)) or "shoal:" in str(arg):
                return True
        return False


logging.getLogger("psycopg.pool").addFilter(_QuietPool())


class _Connection(psycopg.Connection[TupleRow]):
    """A connection that records why connecting failed (see ``_CONNECT_ERRORS``).

    It also keeps one cursor for the store's statements (``statement_cursor``):
    a new cursor per statement costs more client time than the statement's
    parameters and result together. The pool hands a connection to one
    thread at a time, so the cursor is never shared between threads.
    """

    _statement_cursor: Cursor | None = None

    def statement_cursor(self) -> Cursor:
        cursor = self._statement_cursor
        if cursor is None or cursor.closed:
            cursor = self._statement_cursor = self.cursor()
        return cursor

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> _Connection:
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            _CONNECT_ERRORS[conninfo] = _describe(exc)
            raise
        _CONNECT_ERRORS.pop(conninfo, None)
        return conn


class _AsyncConnection(psycopg.AsyncConnection[TupleRow]):
    """``_Connection`` for the async pool (``postgresql_async.py``): the same two jobs."""

    _statement_cursor: psycopg.AsyncCursor[TupleRow] | None = None

    def statement_cursor(self) -> psycopg.AsyncCursor[TupleRow]:
        cursor = self._statement_cursor
        if cursor is None or cursor.closed:
            cursor = self._statement_cursor = self.cursor()
        return cursor

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> _AsyncConnection:
        try:
            conn = await super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            _CONNECT_ERRORS[conninfo] = _describe(exc)
            raise
        _CONNECT_ERRORS.pop(conninfo, None)
        return conn


# -- fields <-> jsonb ---------------------------------------------------------

# jsonb cannot hold U+0000, and JSON cannot hold a lone surrogate: such keys
# (and keys that start with the escape mark itself) are stored as the mark
# followed by the base64 of their UTF-8 (surrogatepass) bytes.
_ESCAPE = "\x01"


def _map_key(key: str) -> str:
    if "\x00" in key or key.startswith(_ESCAPE) or not _plain_utf8(key):
        raw = key.encode("utf-8", "surrogatepass")
        return _ESCAPE + base64.b64encode(raw).decode("ascii")
    return key


def _unmap_key(stored: str) -> str:
    if stored.startswith(_ESCAPE):
        return base64.b64decode(stored[1:]).decode("utf-8", "surrogatepass")
    return stored


def _plain_utf8(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _b64(value: bytes) -> str:
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _json(value: object) -> str:
    return orjson.dumps(value).decode("utf-8")


def _record(row: tuple[Any, ...] | list[Any]) -> StoredRecord:
    """A row of ``_PG_COLUMNS`` as the pure model of ``state.py``."""
    (version, created, accessed, expires, absolute, invalidated, token, until, blob) = row
    fields: dict[str, bytes] = {}
    versions: dict[str, int] = {}
    for stored, entry in orjson.loads(blob).items():
        key = _unmap_key(stored)
        # a2b_base64 is what b64decode runs, minus its argument checks.
        fields[key] = binascii.a2b_base64(entry["d"])
        versions[key] = int(entry["v"])
    return StoredRecord(
        version=int(version),
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


class _Statements:
    """The PostgreSQL statements of ``_sql.py`` for one table, rendered once."""

    def __init__(self, table: str) -> None:
        quoted = f'"{table}"'
        lock_key = int.from_bytes(
            hashlib.sha256(f"shoal:{table}".encode()).digest()[:8], "big", signed=True
        )
        self.channel = f"{table}_wake"
        names = {
            "table": quoted,
            "index": f'"{table}_expires"',
            "lock_key": str(lock_key),
            "channel": f"'{self.channel}'",
        }

        def render(template: str, **extra: str) -> str:
            return template.format(**names, **extra)

        self.quoted_table = quoted
        self.listen = f'LISTEN "{self.channel}"'
        self.schema = tuple(render(s) for s in _sql.PG_SCHEMA)
        self.migrate_lock = render(_sql.PG_MIGRATE_LOCK)
        self.table_exists = _sql.PG_TABLE_EXISTS
        self.select = render(_sql.PG_SELECT)
        self.touch = render(_sql.PG_TOUCH)
        self.load_lock = render(_sql.PG_LOAD_LOCK)
        # with a touch -> its variant of PG_TAKE
        self.take = {
            touch: render(_sql.PG_TAKE, touch=_sql.PG_TAKE_TOUCH if touch else "")
            for touch in (False, True)
        }
        self.create = render(_sql.PG_CREATE)
        # (replace, with per-key expectations) -> its variant of PG_APPLY
        self.apply = {
            (replace, expect): render(
                _sql.PG_APPLY,
                fields=_sql.PG_APPLY_FIELDS_REPLACE if replace else _sql.PG_APPLY_FIELDS_MERGE,
                conflicts=_sql.PG_APPLY_CONFLICTS if expect else _sql.PG_APPLY_NO_CONFLICTS,
            )
            for replace in (False, True)
            for expect in (False, True)
        }
        self._render = render
        self._save: dict[tuple[bool, bool, bool, bool, bool, bool], str] = {}
        self.invalidate = render(_sql.PG_INVALIDATE)
        self.unlock = render(_sql.PG_UNLOCK)
        self.renew = render(_sql.PG_RENEW)
        self.delete = render(_sql.PG_DELETE)
        self.list = render(_sql.PG_LIST)
        self.purge = render(_sql.PG_PURGE)

    def save(
        self,
        *,
        replace: bool,
        delete: bool,
        fenced: bool,
        versioned: bool,
        expect: bool,
        release: bool,
    ) -> str:
        """The variant of PG_SAVE for a save of this shape, rendered on first use."""
        shape = (replace, delete, fenced, versioned, expect, release)
        query = self._save.get(shape)
        if query is None:
            if replace:
                fields = _sql.PG_SAVE_FIELDS_REPLACE
            else:
                fields = _sql.PG_SAVE_FIELDS_MERGE_DELETE if delete else _sql.PG_SAVE_FIELDS_MERGE
            checks = "".join(
                piece
                for wanted, piece in (
                    (fenced, _sql.PG_SAVE_FENCED),
                    (versioned, _sql.PG_SAVE_VERSION),
                    (expect, _sql.PG_SAVE_EXPECT),
                )
                if wanted
            )
            query = self._save[shape] = self._render(
                _sql.PG_SAVE,
                fields=fields,
                lease=_sql.PG_SAVE_RELEASE if release else "",
                checks=checks,
                notify=self._render(_sql.PG_SAVE_NOTIFY) if release else "",
            )
        return query


S = TypeVar("S", bound="PostgresSettings")


class PostgresSettings:
    """What the sync and the async store share: the URL's settings, statements, errors.

    ``conninfo`` is a libpq URL or key=value string (it may hold a password;
    it is never shown). ``url`` is the masked URL shown in errors and logs.
    ``lock_poll``: a lease waiter re-checks at least this often even without
    a notification (a backstop). ``connect_kwargs``: extra keyword arguments
    for the pool's ``connect`` (e.g. ``cursor_factory``).

    ``PostgresStore`` and ``AsyncPostgresStore`` (``postgresql_async.py``)
    both derive from it, so one URL means the same timeouts, pool size,
    statements and error messages on both. Rejected: a second parser for the
    async store's URL.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        url: str | None = None,
        table: str = "shoal_sessions",
        min_size: int = 1,
        max_size: int = 10,
        # Short on purpose: a session statement takes milliseconds, and the
        # circuit breaker opens on the first call that fails after a timeout,
        # so a request waits one of these at most once per outage and process
        # (and once per probe): a refused server costs pool_timeout (2 s), a
        # frozen one the watchdog's max(socket_timeout, statement_timeout + 1)
        # = 2 s. Rejected: the former 5/5/5/10 s, which every request of a
        # sync worker waited (7 s with the server killed, 16 s frozen). libpq
        # reads a connect_timeout below 2 as 2.
        connect_timeout: float = 2.0,
        statement_timeout: float = 1.0,
        pool_timeout: float | None = None,
        socket_timeout: float = 2.0,
        reconnect_timeout: float = 10.0,
        # Creating the table once at first start; DDL may wait on a busy disk.
        schema_timeout: float = 30.0,
        prepared: bool = True,
        lock_poll: float = 1.0,
        libpq: Mapping[str, str] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            _TABLE_NAME(table)
        except ValueError as exc:
            raise ConfigError(f"table={table!r}: {exc}") from None
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigError(
                f"min_size={min_size}, max_size={max_size}: need 0 <= min_size <= max_size, "
                "max_size >= 1"
            )
        self.url = mask_url(url) if url else "postgresql://(conninfo)"
        self.table = table
        self.conninfo = conninfo
        self.min_size, self.max_size = min_size, max_size
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.pool_timeout = pool_timeout if pool_timeout is not None else connect_timeout
        self.socket_timeout = socket_timeout
        self.reconnect_timeout = reconnect_timeout
        self.schema_timeout = schema_timeout
        self.lock_poll = lock_poll
        self._q = _Statements(table)
        socket_ms = int(socket_timeout * 1000)
        statement_ms = max(1, int(statement_timeout * 1000))
        self._connect_kwargs: dict[str, Any] = {
            "application_name": "shoal",
            **dict(libpq or {}),
            # libpq takes whole seconds; a value below 2 is read as 2.
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            # A dead peer or network is noticed within socket_timeout; a
            # server that is up but silent is cut by the _Watchdog.
            "keepalives": 1,
            "keepalives_idle": max(1, int(socket_timeout / 2)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": socket_ms,
        }
        self._pool_kwargs: dict[str, Any] = {
            **self._connect_kwargs,
            "autocommit": True,
            # Server-side prepared after 5 runs (the plan is reused); behind
            # pgbouncer in transaction mode, set ``prepared=false``.
            "prepare_threshold": 5 if prepared else None,
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
            **dict(connect_kwargs or {}),
        }
        # A statement still unanswered after this long is cut (the frozen
        # server): the watchdog (sync) or a loop timer (async).
        self.cut_after = max(socket_timeout, statement_timeout + 1.0)
        self._schema_ready = False
        self._existing_only = False  # see require_existing()
        self._lock = threading.Lock()  # made again in a forked child (_STORES)
        _STORES.add(self)
        self._start()

    def _start(self) -> None:
        """The subclass's own state (pools, threads), set up at the end of ``__init__``."""

    @classmethod
    def from_url(cls: type[S], url: str) -> S:
        """``postgresql://user:password@host:port/db?table=...&max_size=...``."""
        parts = split_url(url)
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise ConfigError(f"{mask_url(url)} is not a postgresql:// URL")
        host_ports(url, parts.netloc, default_port=5432)  # libpq's host[:port][,...]
        options = query_options(url, _OPTIONS)
        libpq = {name: options.pop(name) for name in _LIBPQ_OPTIONS if name in options}
        conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, "", ""))
        return cls(conninfo, url=url, libpq=libpq, **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} table={self.table}>"

    def _unavailable(self, exc: BaseException, cut: _Cut | None = None) -> StoreUnavailable:
        detail = _describe(exc)
        if cut is not None and cut.fired:
            detail = f"no answer within {self.cut_after:g}s (socket_timeout): {detail}"
        if isinstance(exc, PoolTimeout):
            cause = _CONNECT_ERRORS.get(self.conninfo)
            wrong = _misconfigured(cause) if cause else None
            if wrong:
                # Still StoreUnavailable (a 503, and the breaker then answers
                # every request at once), but it names a URL to fix, not an
                # outage to wait out. Rejected: a ConfigError from the
                # operation, which the middleware would raise as a 500 per
                # request, each after the pool timeout.
                detail = (
                    f"not an outage, the server refused the connection: {wrong}; "
                    "check the user, password and database name in the store URL"
                )
            else:
                detail = f"no connection within {self.pool_timeout:g}s" + (
                    f" (last connect error: {cause})" if cause else ""
                )
        return StoreUnavailable(self.url, detail)

    def _needs_table(self, exists: tuple[Any, ...] | None) -> bool:
        """Whether PG_TABLE_EXISTS's answer means "create it"; NotAStore when we may not."""
        if exists and exists[0]:
            return False
        if self._existing_only:
            raise NotAStore(
                self.url,
                f"the database has no {self.table} table; check --store, or add the table "
                "with `shoal migrate` if this database is meant to hold sessions",
            )
        return True

    def _migration(self) -> list[str | sql.Composed]:
        """The statements that create the table, in one transaction, in order.

        DDL waits on the catalog and the disk: a request's short timeout
        would fail a first start on a busy server, so the transaction runs
        under ``schema_timeout`` (and the cut-off is raised to match).
        """
        schema_ms = sql.Literal(max(1, int(self.schema_timeout * 1000)))
        settings: list[str | sql.Composed] = [
            sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(setting), schema_ms)
            for setting in ("statement_timeout", "lock_timeout")
        ]
        return [*settings, self._q.migrate_lock, *self._q.schema]

    def _key(self, key: RecordKey) -> dict[str, Any]:
        return {"app_id": key.app_id, "id_hash": key.id_hash}

    def _pool_args(self) -> dict[str, Any]:
        """The pool's arguments (sync or async pool alike), but its connection class."""
        return {
            "conninfo": self.conninfo,
            "kwargs": self._pool_kwargs,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "timeout": self.pool_timeout,
            "reconnect_timeout": self.reconnect_timeout,
            "name": f"shoal:{self.table}",
            "num_workers": 2,
            "open": False,
        }

    def _listen_connection(self) -> psycopg.Connection[TupleRow]:
        """The lease listener's connection (``_Waker``, in its own thread, sync)."""
        conn = psycopg.connect(self.conninfo, autocommit=True, **self._connect_kwargs)
        conn.execute(self._q.listen)
        return conn

    # -- the contract as plans: statements to send, answers to read -----------
    #
    # Each operation is written once, here, as a generator that yields
    # (statement, parameters, what to fetch) and is sent each answer; the
    # sync store runs the statements on its pool (``PostgresStore._drive``),
    # the async store awaits them (``AsyncPostgresStore._drive``). Rejected:
    # the async store as a hand copy of the sync one, and a generated twin
    # (httpcore's unasync): what differs is only how one statement travels.

    def _mark(self) -> tuple[int, int] | None:
        """Where the lease notifications stand now (``_Waker.mark``), or None."""
        raise NotImplementedError

    def _marks(self) -> dict[RecordKey, tuple[int, int] | None]:
        """The marks of locking loads answered LOCKED, per key, for ``wait_unlocked``."""
        raise NotImplementedError

    def _plan_load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> Plan[LoadResult]:
        if lock is not None:
            return (yield from self._plan_load_locked(key, now=now, touch=touch, lock=lock))
        row = yield self._q.select, self._key(key), ONE
        result, outcome = load_step(
            _record(row) if row else None, now=now, touch=touch, lock=None
        )
        if outcome is None:
            return result
        # A touch is due (at most once per touch interval): one UPDATE that
        # re-checks it and answers with the row either way.
        assert touch is not None
        return touched((yield self._q.touch, touch_params(key, now, touch), ONE), now)

    def _plan_load_locked(
        self, key: RecordKey, *, now: float, touch: Touch | None, lock: LockRequest
    ) -> Plan[LoadResult]:
        params = lock_params(key, now, touch, lock)
        # Where the notifications stood before this load was sent: a release
        # after it wakes the caller's wait_unlocked (see _Waker).
        mark = self._mark()
        # The lease as it almost always goes: one UPDATE that takes it.
        row = yield self._q.take[touch is not None], params, ONE
        if row is not None:
            return LoadResult(LoadStatus.LOADED, _record(row).to_record())
        # Refused: PG_LOAD_LOCK says why, atomically (or takes the lease, when
        # it came free since).
        result = lock_answer((yield self._q.load_lock, params, ONE))
        if result.status is LoadStatus.LOCKED:
            self._marks()[key] = mark
        return result

    def _plan_create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> Plan[bool]:
        return (yield self._q.create, create_params(key, record, now, lock), ONE) is not None

    def _plan_apply(self, key: RecordKey, change: Change, *, now: float) -> Plan[ApplyResult]:
        # The save as it almost always goes: one UPDATE that checks and writes.
        query, params = save_plan(self._q, key, change, now)
        row = yield query, params, ONE
        if row is not None:
            return ApplyResult(ApplyStatus.OK, version=int(row[0]))
        # It wrote nothing: PG_APPLY says why, atomically (or writes, when the
        # row changed since in a way that lets the save through).
        query, params = apply_plan(self._q, change, params)
        return applied((yield query, params, ONE))

    def _plan_invalidate(
        self, key: RecordKey, *, now: float, lease_token: str | None = None
    ) -> Plan[bool]:
        params = {**self._key(key), "now": now, "token": lease_token}
        return (yield self._q.invalidate, params, ONE) is not None

    def _plan_delete(self, key: RecordKey) -> Plan[bool]:
        return (yield self._q.delete, self._key(key), ONE) is not None

    def _plan_unlock(self, key: RecordKey, token: str) -> Plan[None]:
        yield self._q.unlock, {**self._key(key), "token": token}, ONE

    def _plan_renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> Plan[bool]:
        params = {**self._key(key), "token": token, "now": now, "lease": lease}
        return (yield self._q.renew, params, ONE) is not None

    def _plan_records(self, app_id: str | None = None) -> Plan[list[RecordInfo]]:
        return listed((yield self._q.list, {"app_id": app_id}, ALL))

    def _plan_purge(self, *, now: float, grace: float, limit: int = 1000) -> Plan[int]:
        count: int = yield self._q.purge, {"cutoff": now - grace, "limit": limit}, COUNT
        return count

    def _plan_purge_ended(
        self, *, now: float, grace: float, limit: int = 1000
    ) -> Plan[list[Ended]]:
        from ..cluster._statements import PG_PURGE_RETURNING

        query = PG_PURGE_RETURNING.format(table=self._q.quoted_table)
        return ended_rows((yield query, {"cutoff": now - grace, "limit": limit}, ALL))


class PostgresStore(PostgresSettings):
    """Sessions in one PostgreSQL table, reached through a connection pool.

    The arguments are ``PostgresSettings``'s.
    """

    def _start(self) -> None:
        self._thread_state = threading.local()
        self._pool_obj: ConnectionPool[_Connection] | None = None
        self._waker_obj: _Waker | None = None
        self._watchdog_obj: _Watchdog | None = None
        self._pid = os.getpid()
        self._closed = False

    # -- connections --------------------------------------------------------

    def _pool(self) -> ConnectionPool[_Connection]:
        pool = self._pool_obj
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._closed:
                raise StoreUnavailable(self.url, "the store was closed")
            if self._pid != os.getpid():
                self._forked()
            if self._pool_obj is None:
                pool = ConnectionPool(connection_class=_Connection, **self._pool_args())
                pool.open(wait=False)
                self._pool_obj = pool
            return self._pool_obj

    def _forked(self) -> None:
        """In a child process: forget the parent's pool and listener, never close them."""
        _INHERITED.extend(x for x in (self._pool_obj, self._waker_obj) if x is not None)
        self._pool_obj, self._waker_obj, self._watchdog_obj = None, None, None
        self._pid = os.getpid()

    def _run(self, query: str, params: Mapping[str, Any], consume: Callable[[Cursor], T]) -> T:
        """Execute one statement on a pooled connection and read its result."""
        if not self._schema_ready:
            self._ensure_schema()
        for attempt in range(2):
            pool = self._pool()
            broken = False
            cut = _Cut()
            watchdog = self._watchdog()
            try:
                # getconn/putconn rather than pool.connection(): the same
                # hand-out and return (putconn discards a connection left
                # broken or inside a transaction) without the commit() that
                # the context manager calls on an autocommit connection.
                conn = pool.getconn()
                try:
                    watched = watchdog.start(conn, cut)
                    try:
                        return consume(conn.statement_cursor().execute(query, params))
                    except psycopg.OperationalError:
                        broken = conn.broken or cut.fired
                        raise
                    finally:
                        watchdog.stop_watching(watched, conn, cut)
                finally:
                    pool.putconn(conn)
            except psycopg.errors.UndefinedTable as exc:
                # The table was dropped under us (like a lost SQLite file):
                # recreate it once; the failed statement changed nothing.
                if attempt:
                    raise self._unavailable(exc) from exc
                self._schema_ready = False
                self._ensure_schema()
            except psycopg.Error as exc:
                if broken:
                    # One dead connection means the server went away: drop
                    # the idle ones too, so the next requests reconnect
                    # instead of each failing on a dead socket.
                    pool.drain()
                raise self._unavailable(exc, cut) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        cut = _Cut()
        try:
            with self._pool().connection() as conn, self._watchdog().watch(conn, cut):
                exists = conn.execute(
                    self._q.table_exists, {"table": self._q.quoted_table}
                ).fetchone()
        except psycopg.Error as exc:
            raise self._unavailable(exc, cut) from exc
        if self._needs_table(exists):
            self.migrate()
        self._schema_ready = True

    def require_existing(self) -> None:
        """Use only a database that holds the table; never create it.

        For the admin commands, which may be pointed at an application's own
        database: ``NotAStore`` now (and whenever the table is found missing)
        instead of the DDL; ``migrate()`` is the deliberate way to add it.
        """
        self._existing_only, self._schema_ready = True, False
        self._ensure_schema()

    def migrate(self) -> None:
        """Create the table and its index if missing; safe to run concurrently."""
        cut = _Cut()
        try:
            with self._pool().connection() as conn, self._watchdog().watch(
                conn, cut, self.schema_timeout + 1.0
            ):
                with conn.transaction():
                    for statement in self._migration():
                        conn.execute(statement)
        except psycopg.Error as exc:
            raise self._unavailable(exc, cut) from exc
        self._schema_ready = True

    # -- the contract: the shared plans, each statement run here ---------------

    def _drive(self, plan: Plan[T]) -> T:
        """Run ``plan``'s statements in turn, each answer sent back into it."""
        step = next(plan)  # every plan sends at least one statement
        while True:
            query, params, fetch = step
            answer = self._run(query, params, _FETCH[fetch])
            try:
                step = plan.send(answer)
            except StopIteration as done:
                result: T = done.value
                return result

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        return self._drive(self._plan_load(key, now=now, touch=touch, lock=lock))

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        return self._drive(self._plan_create(key, record, now=now, lock=lock))

    def apply(self, key: RecordKey, change: Change, *, now: float) -> ApplyResult:
        return self._drive(self._plan_apply(key, change, now=now))

    def invalidate(
        self, key: RecordKey, *, now: float, lease_token: str | None = None
    ) -> bool:
        return self._drive(self._plan_invalidate(key, now=now, lease_token=lease_token))

    def delete(self, key: RecordKey) -> bool:
        return self._drive(self._plan_delete(key))

    def unlock(self, key: RecordKey, token: str) -> None:
        self._drive(self._plan_unlock(key, token))

    def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> bool:
        return self._drive(self._plan_renew(key, token, now=now, lease=lease))

    def records(self, app_id: str | None = None) -> Iterator[RecordInfo]:
        yield from self._drive(self._plan_records(app_id))

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        return self._drive(self._plan_purge(now=now, grace=grace, limit=limit))

    def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As ``purge``, returning what each deleted record held (one DELETE ... RETURNING)."""
        return self._drive(self._plan_purge_ended(now=now, grace=grace, limit=limit))

    def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        mark = self._marks().pop(key, None)
        if timeout <= 0:
            return
        self._waker().wait(wake_payload(key), timeout, mark)

    def _mark(self) -> tuple[int, int] | None:
        # Only a listener of this process that is already up: a locking load
        # never waits for one to start.
        waker = self._waker_obj if self._pid == os.getpid() else None
        return waker.mark() if waker is not None else None

    def _marks(self) -> dict[RecordKey, tuple[int, int] | None]:
        """This thread's notification marks, per key it found LOCKED."""
        marks: dict[RecordKey, tuple[int, int] | None] | None = getattr(
            self._thread_state, "marks", None
        )
        if marks is None or len(marks) > 64:
            marks = self._thread_state.marks = {}
        return marks

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, waker, watchdog = self._pool_obj, self._waker_obj, self._watchdog_obj
            self._pool_obj, self._waker_obj, self._watchdog_obj = None, None, None
            mine = self._pid == os.getpid()
        if not mine:
            _INHERITED.extend(x for x in (pool, waker) if x is not None)
            return
        if waker is not None:
            waker.stop()
        if pool is not None:
            pool.close(timeout=2.0)
        if watchdog is not None:
            watchdog.stop()

    def _watchdog(self) -> _Watchdog:
        watchdog = self._watchdog_obj
        if watchdog is not None and self._pid == os.getpid():
            return watchdog
        with self._lock:
            if self._pid != os.getpid():
                self._forked()
            if self._watchdog_obj is None:
                self._watchdog_obj = _Watchdog(self.cut_after, self.table)
            return self._watchdog_obj

    # -- lease waiters --------------------------------------------------------

    def _waker(self) -> _Waker:
        waker = self._waker_obj
        if waker is not None and self._pid == os.getpid():
            return waker
        with self._lock:
            if self._pid != os.getpid():
                self._forked()
            if self._waker_obj is None:
                self._waker_obj = _Waker(
                    self._listen_connection, self.table, poll=self.lock_poll
                )
            return self._waker_obj


# -- statements' parameters and answers, shared with the async store -----------


def touch_params(key: RecordKey, now: float, touch: Touch) -> dict[str, Any]:
    """PG_TOUCH's parameters."""
    return {
        "app_id": key.app_id,
        "id_hash": key.id_hash,
        "now": now,
        "idle": touch.idle_timeout,
        "before": touch.if_accessed_before,
    }


def touched(row: tuple[Any, ...] | None, now: float) -> LoadResult:
    """PG_TOUCH's answer (the row either way) as a load's result."""
    return load_step(_record(row[1:]) if row else None, now=now, touch=None, lock=None)[0]


def lock_params(
    key: RecordKey, now: float, touch: Touch | None, lock: LockRequest
) -> dict[str, Any]:
    """PG_TAKE's and PG_LOAD_LOCK's parameters."""
    return {
        "app_id": key.app_id,
        "id_hash": key.id_hash,
        "now": now,
        "token": lock.token,
        "lease": lock.lease,
        "before": touch.if_accessed_before if touch else None,
        "idle": touch.idle_timeout if touch else None,
    }


def lock_answer(row: tuple[Any, ...] | None) -> LoadResult:
    """PG_LOAD_LOCK's answer: why the lease was refused (or the row, taken after all)."""
    if row is None:
        return LoadResult(LoadStatus.ABSENT)
    status, holder_until = row[0], row[1]
    if status == "loaded":
        return LoadResult(LoadStatus.LOADED, _record(row[2:]).to_record())
    if status == "locked":
        return LoadResult(LoadStatus.LOCKED, locked_until=holder_until)
    return LoadResult(LoadStatus(status))


def create_params(
    key: RecordKey, record: NewRecord, now: float, lock: LockRequest | None
) -> dict[str, Any]:
    """PG_CREATE's parameters."""
    fields = {_map_key(k): {"v": 1, "d": _b64(v)} for k, v in record.fields.items()}
    return {
        "app_id": key.app_id,
        "id_hash": key.id_hash,
        "created": record.created,
        "now": now,
        "expires": record.expires,
        "absolute": record.absolute_expires,
        "token": lock.token if lock else None,
        "until": now + lock.lease if lock else 0.0,
        "fields": _json(fields),
    }


def save_plan(
    q: _Statements, key: RecordKey, change: Change, now: float
) -> tuple[str, dict[str, Any]]:
    """The PG_SAVE variant for ``change`` and its parameters."""
    params: dict[str, Any] = {
        "app_id": key.app_id,
        "id_hash": key.id_hash,
        "now": now,
        "idle": change.idle_timeout,
        "set": _json({_map_key(k): _b64(v) for k, v in change.set.items()}),
    }
    deleted = [] if change.replace else [_map_key(k) for k in change.delete]
    if deleted:
        params["delete"] = deleted
    fenced = change.lease_token is not None
    if fenced:
        params["token"] = change.lease_token
    versioned = change.expect_version is not None
    if versioned:
        params["expect_version"] = change.expect_version
    expect = bool(change.expect_fields)
    if expect:
        params["expect_fields"] = _json(
            {_map_key(k): v for k, v in change.expect_fields.items()}
        )
    query = q.save(
        replace=change.replace,
        delete=bool(deleted),
        fenced=fenced,
        versioned=versioned,
        expect=expect,
        release=change.release,
    )
    return query, params


def apply_plan(
    q: _Statements, change: Change, params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """PG_APPLY after a PG_SAVE that wrote nothing: ``save_plan``'s parameters completed."""
    params.setdefault("delete", [] if change.replace else [_map_key(k) for k in change.delete])
    params.setdefault("token", None)
    params.setdefault("expect_version", None)
    params["release"] = change.release
    return q.apply[change.replace, bool(change.expect_fields)], params


def applied(row: tuple[Any, ...] | None) -> ApplyResult:
    """PG_APPLY's answer as an ``ApplyResult``."""
    if row is None:
        return ApplyResult(ApplyStatus.GONE)
    status, conflicts, version = row[0], row[1], row[2]
    if status == "ok":
        return ApplyResult(ApplyStatus.OK, version=int(version))
    if status == "conflict":
        keys = tuple(sorted(_unmap_key(k) for k in conflicts or ()))
        return ApplyResult(ApplyStatus.CONFLICT, conflicts=keys)
    return ApplyResult(ApplyStatus(status))


def ended_rows(rows: list[tuple[Any, ...]]) -> list[Ended]:
    """PG_PURGE_RETURNING's rows as what each deleted record held."""
    ended = []
    for app_id, id_hash, invalidated, blob in rows:
        fields = {
            _unmap_key(k): binascii.a2b_base64(v["d"]) for k, v in orjson.loads(blob).items()
        }
        ended.append(Ended(RecordKey(app_id, id_hash), fields, bool(invalidated)))
    return ended


def listed(rows: list[tuple[Any, ...]]) -> list[RecordInfo]:
    """PG_LIST's rows as listing rows."""
    return [_record(row[2:]).info(RecordKey(row[0], row[1])) for row in rows]


def _one(cur: Cursor) -> tuple[Any, ...] | None:
    return cur.fetchone()


def _all(cur: Cursor) -> list[tuple[Any, ...]]:
    return cur.fetchall()


def _count(cur: Cursor) -> int:
    return max(cur.rowcount, 0)


_FETCH: dict[str, Callable[[Cursor], Any]] = {ONE: _one, ALL: _all, COUNT: _count}


def wake_payload(key: RecordKey) -> str:
    """The NOTIFY payload a release of ``key`` sends (``app_id:id_hash``)."""
    return f"{key.app_id}:{key.id_hash}"


class _Cut:
    """Whether the watchdog cut a statement's connection."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False


class _Watchdog:
    """Cuts the socket of a statement still unanswered after ``limit`` seconds.

    ``statement_timeout`` needs a server that runs; TCP user timeout and
    keepalives need a network that is gone. A server that the kernel still
    answers for but that does not (stopped, frozen on a disk) would hold a
    request forever: libpq has no read timeout. So every statement is
    registered here, and a daemon thread that ticks about once a second
    shuts down the socket of any statement past its deadline; psycopg then
    fails it, the pool drops the connection, the caller gets
    ``StoreUnavailable``. Rejected: a ``threading.Timer`` per statement (a
    thread start per round trip), and ``conn.cancel()`` (it needs an
    answering postmaster, the very thing that is missing).
    """

    def __init__(self, limit: float, name: str) -> None:
        self.limit = limit
        self.tick = min(1.0, limit / 4)
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[float, int, _Cut]] = {}
        self._next = 0
        self._stopped = threading.Event()
        self._name = name
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(
        self, conn: psycopg.Connection[TupleRow], cut: _Cut, limit: float | None = None
    ) -> Iterator[None]:
        token = self.start(conn, cut, limit)
        try:
            yield
        finally:
            self.stop_watching(token, conn, cut)

    def start(
        self, conn: psycopg.Connection[TupleRow], cut: _Cut, limit: float | None = None
    ) -> int:
        """Watch a statement about to be sent on ``conn``; the token for ``stop_watching``."""
        fd = conn.pgconn.socket
        deadline = time.monotonic() + (self.limit if limit is None else limit)
        with self._lock:
            self._next += 1
            token = self._next
            self._inflight[token] = (deadline, fd, cut)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"shoal-watchdog-{self._name}", daemon=True
                )
                self._thread.start()
        return token

    def stop_watching(self, token: int, conn: psycopg.Connection[TupleRow], cut: _Cut) -> None:
        with self._lock:
            self._inflight.pop(token, None)
        if cut.fired and not conn.closed:
            conn.close()  # never hand a cut connection back to the pool

    def _run(self) -> None:
        while not self._stopped.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                overdue = [t for t, (deadline, _, _) in self._inflight.items() if deadline <= now]
                for token in overdue:
                    _, fd, cut = self._inflight.pop(token)
                    cut.fired = True
                    _shutdown(fd)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=self.tick + 1.0)


def _shutdown(fd: int) -> None:
    """Shut a socket down for every descriptor of it (the dup is then closed)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class _Waker:
    """Wakes threads waiting for a lease, on NOTIFY, from one listening connection.

    A daemon thread holds one LISTEN connection per store and process and
    records each payload (``app_id:id_hash``) with a sequence number. Before
    a locking load, the store takes a ``mark()`` (the sequence number and
    the connection's generation); when the load answers LOCKED, the waiter
    then sleeps until a payload for its key arrives with a higher number:
    a release that happened after the load was sent wakes it even if it came
    in before ``wait`` began, and an older one never does (no spinning).

    Without a mark (the listener was not up when the load was sent, or it
    reconnected since, so notifications may have been missed), ``wait``
    returns as soon as the listener is up: a spurious wake, after which the
    caller's next load is covered. Every wait is also capped at ``poll``
    seconds, a backstop only; while the listener cannot connect, waits are
    short jittered sleeps.

    Rejected: a LISTEN connection per waiting thread (a pool of idle
    listeners that nobody reads stalls the server's notification queue), and
    polling (a release would be seen late, or cost a round trip per slice).
    """

    POLL = 0.25  # how often the listener thread checks it should stop
    RECENT = 4096  # payloads remembered (the newest per key)

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[TupleRow]],
        name: str,
        *,
        poll: float,
    ) -> None:
        self._connect = connect
        self.poll = poll
        self._cond = threading.Condition()
        self._seq = 0
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._listening = False
        self._pokes: set[Callable[[], None]] = set()  # async waiters' wake-ups
        self._generation = 0  # bumped whenever the listener connects or drops
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"shoal-listen-{name}", daemon=True
        )
        self._thread.start()

    def mark(self) -> tuple[int, int] | None:
        """Where the notification stream is now; None while not listening."""
        with self._cond:
            return (self._generation, self._seq) if self._listening else None

    def wait(self, wake: str, timeout: float, mark: tuple[int, int] | None) -> None:
        deadline = time.monotonic() + min(timeout, self.poll)
        with self._cond:
            if not self._listening:
                # Starting, or the server is away: a short sleep; the caller
                # re-tries its load (which reports the outage, if any).
                self._cond.wait_for(
                    lambda: self._listening or self._stopped.is_set(),
                    timeout=min(timeout, random.uniform(0.01, 0.05)),
                )
                return
            while self._waiting(wake, mark):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    async def wait_async(self, wake: str, timeout: float, mark: tuple[int, int] | None) -> None:
        """``wait`` for a coroutine: the same rules, the loop woken by the listener thread."""
        loop = asyncio.get_running_loop()
        poked = asyncio.Event()

        def poke() -> None:
            loop.call_soon_threadsafe(poked.set)

        with self._cond:
            listening = self._listening
            self._pokes.add(poke)
        try:
            if not listening:
                await asyncio.wait_for(
                    poked.wait(), timeout=min(timeout, random.uniform(0.01, 0.05))
                )
                return
            deadline = loop.time() + min(timeout, self.poll)
            while True:
                with self._cond:
                    poked.clear()
                    if not self._waiting(wake, mark):
                        return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                await asyncio.wait_for(poked.wait(), timeout=remaining)
        except asyncio.TimeoutError:  # the builtin TimeoutError only from 3.11
            return
        finally:
            with self._cond:
                self._pokes.discard(poke)

    def _waiting(self, wake: str, mark: tuple[int, int] | None) -> bool:
        """Whether a waiter that took ``mark`` should go on waiting (under the lock).

        Not when notifications may have been missed (no mark, or the listener
        reconnected since: re-load now), nor once a payload for ``wake``
        newer than the mark arrived.
        """
        if not self._listening or mark is None or mark[0] != self._generation:
            return False
        return self._recent.get(wake, 0) <= mark[1]

    def _run(self) -> None:
        backoff = 0.05
        while not self._stopped.is_set():
            conn: psycopg.Connection[TupleRow] | None = None
            try:
                conn = self._connect()
                self._set_listening(True)
                backoff = 0.05
                while not self._stopped.is_set():
                    for note in conn.notifies(timeout=self.POLL):
                        self._record(note.payload)
            except psycopg.Error as exc:
                log.debug("lease listener disconnected: %s", _describe(exc))
            finally:
                self._set_listening(False)
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _set_listening(self, listening: bool) -> None:
        with self._cond:
            self._listening = listening
            self._generation += 1
            self._cond.notify_all()
            for poke in self._pokes:
                poke()

    def _record(self, payload: str) -> None:
        with self._cond:
            self._seq += 1
            self._recent[payload] = self._seq
            self._recent.move_to_end(payload)
            while len(self._recent) > self.RECENT:
                self._recent.popitem(last=False)
            self._cond.notify_all()
            for poke in self._pokes:
                poke()

    def stop(self) -> None:
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=2 * self.POLL + 1.0)


# Every live store, so a fork handler can reset their locks in the child.
_STORES: weakref.WeakSet[PostgresSettings] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
