"""redis.asyncio connections used directly: ``_redis_lane.Lane`` for an event loop.

Why: ``redis.asyncio.Redis.execute_command`` runs, for every command, the
pool's checkout and return (an ``asyncio.Condition``, a lock, a timeout
scope, observability counters), a retry wrapper and the response callbacks.
Through the ASGI middleware this was about as much CPU as the rest of a
session request (measured: docs/benchmarks.md, issue 11). The same design as
the sync ``Lane``, and for the same reasons (its docstring): connections
borrowed from the redis-py pool kept in a LIFO list, each command sent with
the connection's own ``send_packed_command``/``read_response`` (redis-py's
connection, hiredis parser, TLS, Sentinel master discovery), packed by
hiredis when redis-py found it.

What differs under asyncio:

- **one loop**: an ``AsyncLane`` belongs to the client of one running loop
  (``_loopbound.PerLoop``), so its list is only ever touched by that loop's
  tasks, between awaits: no lock. A forked child makes clients of its own.
- **cancellation**: a command cancelled between send and reply leaves its
  connection out of step; it is disconnected (without waiting on the
  socket) and handed back to the pool, like any failed command.
- **stale connections**: a connection taken from the list is checked with
  ``can_read`` (what the pool's ``ensure_connection`` does) and reconnected
  when the server closed it or left data on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.utils import HIREDIS_AVAILABLE

__all__ = ["AsyncLane"]

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None = None
if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack


class AsyncLane:
    """Borrowed connections of one redis.asyncio pool, reused command after command."""

    __slots__ = ("_idle", "_pack", "_pool")

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        own = "command_packer" in getattr(pool, "connection_kwargs", {})
        self._pack = None if own else _hiredis_pack
        self._idle: list[Any] = []

    async def call(self, *args: Any) -> Any:
        """Send one command and return its raw reply (no response callbacks).

        Raises what redis-py's connection raises: ``ResponseError`` (and
        ``NoScriptError``) for an error reply, connection and timeout errors
        for a broken socket.
        """
        conn = await self._take()
        try:
            pack = self._pack
            if pack is not None:
                await conn.send_packed_command((pack(args),))
            else:
                await conn.send_command(*args)
            reply = await conn.read_response()
        except ResponseError:
            self._idle.append(conn)  # an error reply: the connection is in step
            raise
        except BaseException:
            await self._drop(conn)
            raise
        self._idle.append(conn)
        return reply

    async def _take(self) -> Any:
        try:
            conn = self._idle.pop()
        except IndexError:
            return await self._pool.get_connection()  # connected and checked
        try:
            stale = await conn.can_read()  # data left over, or closed by the server
        except (RedisConnectionError, OSError):
            stale = True
        if stale:
            try:
                await conn.disconnect()
                await conn.connect()
            except BaseException:
                await self._pool.release(conn)
                raise
        return conn

    async def _drop(self, conn: Any) -> None:
        try:
            await conn.disconnect(nowait=True)
        finally:
            await self._pool.release(conn)

    async def give_back(self) -> None:
        """Return every idle connection to the pool (before using the pool directly)."""
        idle = self._idle
        while idle:
            await self._pool.release(idle.pop())
