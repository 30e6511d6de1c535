"""PostgreSQL for an event loop: psycopg's ``AsyncConnectionPool``, the sync store's plans.

The same URL and query parameters as ``PostgresStore`` (``PostgresSettings``
reads both), the same statements (``_sql.py``, rendered by the same
``_Statements``), the same operations: each contract call is one of the
plans ``PostgresSettings`` writes once (``_plan_load`` ... ``_plan_purge``),
which yield their statements; this store awaits each on a pooled
connection, the sync store runs it in its thread. So a request costs the
same round trips (a lock-free load one SELECT, a save one UPDATE), and the
same parameters, answers, checks and errors (``StoreUnavailable``, the cause
chained; a dropped table re-created once, then the statement re-tried).

What differs is how a statement travels, and its guards:

- Pool per loop: psycopg's async pool and its connections belong to the
  loop that made them, so the store keeps one pool per running loop, made
  there on first use (``_loopbound.PerLoop``); ``aclose()`` closes them.
  A forked child never uses the parent's.
- The frozen-server cut-off: libpq has no read timeout, and a server that
  is stopped keeps its sockets open. The sync store's watchdog thread is a
  loop timer here: each statement arms ``loop.call_later(cut_after, ...)``,
  which shuts the connection's socket down if no answer came, so psycopg
  fails the statement (``StoreUnavailable`` after ``cut_after`` =
  max(socket_timeout, statement_timeout + 1) seconds) and the pool drops
  the connection. Rejected: ``asyncio.wait_for`` around the statement: a
  cancelled psycopg statement sends a cancel request and waits up to 10 s
  for it, on a server that answers nothing.
- Lease waiters: the sync store's ``_Waker`` (one LISTEN connection per
  store and process, read by a daemon thread) wakes awaiting coroutines
  through ``call_soon_threadsafe`` (``_Waker.wait_async``). The marks of
  locking loads that found the lease held are kept per key for the store
  (not per thread): a second waiter's newer mark replaces the first's,
  which is still correct (the newer load also found it held), and a waiter
  that finds no mark wakes at once and re-loads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from ._forward import AsyncForwarder
from ._loopbound import PerLoop, aclose_all
from ._threaded import run_in_thread
from .base import Ended, RecordKey
from .postgresql import (
    _INHERITED,
    ALL,
    ONE,
    Plan,
    PostgresSettings,
    _AsyncConnection,
    _Cut,
    _shutdown,
    _Waker,
    wake_payload,
)

__all__ = ["AsyncPostgresStore"]

T = TypeVar("T")

Pool = AsyncConnectionPool[_AsyncConnection]
AsyncCursor = psycopg.AsyncCursor[TupleRow]


class AsyncPostgresStore(AsyncForwarder, PostgresSettings):
    """Sessions in one PostgreSQL table, awaited; see the module docs.

    The arguments are ``PostgresSettings``'s (``connect_kwargs`` go to
    ``psycopg.AsyncConnection.connect``).
    """

    def _start(self) -> None:
        self._pools: PerLoop[Pool] = PerLoop(
            lambda: AsyncConnectionPool(connection_class=_AsyncConnection, **self._pool_args())
        )
        self._waker_obj: _Waker | None = None
        self._waker_pid = os.getpid()
        self._lock_marks: dict[RecordKey, tuple[int, int] | None] = {}

    # -- the contract: the shared plans, each statement awaited -----------------

    async def _forward(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        if name == "wait_unlocked":
            return await self._wait_unlocked(*args, **kwargs)
        if name == "aclose":
            return await self._aclose()
        result = await self._drive(getattr(self, f"_plan_{name}")(*args, **kwargs))
        return result

    async def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As ``purge``, returning what each deleted record held (one DELETE ... RETURNING)."""
        return await self._drive(self._plan_purge_ended(now=now, grace=grace, limit=limit))

    async def _drive(self, plan: Plan[T]) -> T:
        """Await ``plan``'s statements in turn, each answer sent back into it."""
        step = next(plan)  # every plan sends at least one statement
        while True:
            query, params, fetch = step
            answer = await self._run(query, params, fetch)
            try:
                step = plan.send(answer)
            except StopIteration as done:
                result: T = done.value
                return result

    async def _wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        mark = self._marks().pop(key, None)
        if timeout <= 0:
            return
        await self._waker().wait_async(wake_payload(key), timeout, mark)

    def _mark(self) -> tuple[int, int] | None:
        waker = self._waker_obj if self._waker_pid == os.getpid() else None
        return waker.mark() if waker is not None else None

    def _marks(self) -> dict[RecordKey, tuple[int, int] | None]:
        if len(self._lock_marks) > 1024:  # marks of loads whose caller gave up
            self._lock_marks.clear()
        return self._lock_marks

    # -- statements ---------------------------------------------------------------

    async def _pool(self) -> Pool:
        pool = self._pools.get()
        if pool.closed:  # made closed; opened on its loop's first use
            await pool.open(wait=False)
        return pool

    async def _run(self, query: str, params: Mapping[str, Any], fetch: str) -> Any:
        """Await one statement on a pooled connection and read its answer (``ONE``...)."""
        pool = await self._pool()
        if not self._schema_ready:
            await self._ensure_schema(pool)
        for attempt in range(2):
            broken = False
            cut = _Cut()
            try:
                conn = await pool.getconn()
                try:
                    with _cut_after(conn, cut, self.cut_after):
                        try:
                            cursor = await conn.statement_cursor().execute(query, params)
                            return await _fetch(cursor, fetch)
                        except psycopg.OperationalError:
                            broken = conn.broken or cut.fired
                            raise
                finally:
                    if cut.fired and not conn.closed:
                        await conn.close()  # never hand a cut connection back
                    await pool.putconn(conn)
            except psycopg.errors.UndefinedTable as exc:
                # The table was dropped under us: recreate it once, as the sync store.
                if attempt:
                    raise self._unavailable(exc) from exc
                self._schema_ready = False
                await self._ensure_schema(pool)
            except psycopg.Error as exc:
                if broken:
                    # The server went away: drop the idle connections too.
                    await pool.drain()
                raise self._unavailable(exc, cut) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ensure_schema(self, pool: Pool) -> None:
        """Create the table on first use, under ``schema_timeout`` (``_migration``)."""
        cut = _Cut()
        try:
            async with pool.connection() as conn:
                with _cut_after(conn, cut, self.cut_after):
                    found = await conn.execute(
                        self._q.table_exists, {"table": self._q.quoted_table}
                    )
                    exists = await found.fetchone()
                if self._needs_table(exists):
                    with _cut_after(conn, cut, self.schema_timeout + 1.0):
                        async with conn.transaction():
                            for statement in self._migration():
                                await conn.execute(statement)
        except psycopg.Error as exc:
            raise self._unavailable(exc, cut) from exc
        self._schema_ready = True

    # -- lease waiters and closing ---------------------------------------------

    def _waker(self) -> _Waker:
        with self._lock:
            if self._waker_pid != os.getpid():
                # A forked child: the parent's listener is never touched.
                _INHERITED.extend(w for w in (self._waker_obj,) if w is not None)
                self._waker_obj, self._waker_pid = None, os.getpid()
            if self._waker_obj is None:
                self._waker_obj = _Waker(self._listen_connection, self.table, poll=self.lock_poll)
            return self._waker_obj

    async def _aclose(self) -> None:
        """Close this loop's pool (and, on their loops, other loops' pools) and the listener.

        The store stays usable: a later call makes a new pool (as
        ``AsyncRedisStore``), so each ``asyncio.run`` may close what it used.
        """
        await aclose_all(self._pools, lambda pool: pool.close(timeout=2.0))
        with self._lock:
            waker = self._waker_obj if self._waker_pid == os.getpid() else None
            self._waker_obj = None
        if waker is not None:
            await run_in_thread(waker.stop)  # joins its thread: off the loop


@contextmanager
def _cut_after(conn: _AsyncConnection, cut: _Cut, limit: float) -> Iterator[None]:
    """Shut ``conn``'s socket down if the block still runs after ``limit`` seconds."""
    timer = asyncio.get_running_loop().call_later(limit, _cut, conn.pgconn.socket, cut)
    try:
        yield
    finally:
        timer.cancel()


def _cut(fd: int, cut: _Cut) -> None:
    cut.fired = True
    _shutdown(fd)


async def _fetch(cursor: AsyncCursor, fetch: str) -> Any:
    """A statement's answer: its first row (``ONE``), every row (``ALL``), or a count."""
    if fetch == ONE:
        return await cursor.fetchone()
    if fetch == ALL:
        return await cursor.fetchall()
    return max(cursor.rowcount, 0)
