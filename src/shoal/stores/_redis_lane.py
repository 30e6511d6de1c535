"""redis-py connections used directly: one command, one reply, no client machinery.

Why: ``Redis.execute_command`` runs, for every command, the pool's checkout
and return (a queue, a pid check, a readiness poll, observability counters),
a retry wrapper and the response callbacks. For a session request that is
two commands, this was most of the client's CPU (measured: docs/benchmarks.md).
A ``Lane`` keeps the connections it borrowed from the redis-py pool in a
LIFO list of its own and sends each command on one of them with the
connection's own ``send_command``/``read_response``: still redis-py's
connection, its hiredis parser, its error classes, its TLS, and for Sentinel
its master discovery (a ``SentinelManagedConnection`` asks the sentinels on
connect). No Redis protocol is written here: a command is packed by
hiredis' ``pack_command`` (what redis-py's own hiredis serializer ends in,
without its per-argument conversion pass: measured ~6 us a command), or by
the connection's ``pack_command`` when hiredis is absent or the pool was
given a packer of its own.

What it keeps from the pool, and how:

- **fork safety**: a lane remembers its pid; in a forked child it forgets the
  parent's connections (never closing them: they are the parent's sockets)
  and borrows new ones.
- **stale connections**: a connection taken from the list is polled first
  (``can_read``, as the pool does on checkout); one the server closed, or
  with unread data, is reconnected before use.
- **errors**: a connection whose command failed for any reason but a Redis
  error reply (``ResponseError``: the socket is still in step) is
  disconnected and handed back to the pool, never reused as it is.
- **the pool's bound**: a borrowed connection counts against the pool's
  ``max_connections``; the list never holds more than were in use at once.
  Callers that need the pool itself (pub/sub, pipelines, SCAN) call
  ``give_back`` first so the list cannot starve them.

Rejected: a thread-local connection per thread (leaks a connection per dead
thread, and holds one per idle thread); a hand-written RESP client (the
issue rules it out: redis-py owns parsing, TLS and Sentinel).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from redis.connection import ConnectionPool
from redis.utils import HIREDIS_AVAILABLE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["Lane"]

# hiredis' packer, when redis-py found hiredis (else None: the connection packs).
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None = None
if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack


class Lane:
    """Borrowed connections of one redis-py pool, reused command after command."""

    __slots__ = ("_idle", "_pack", "_pid", "_pool")

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        # hiredis packs str, bytes, int and float arguments, which is all the
        # store sends; a pool with its own command_packer keeps it.
        own = "command_packer" in getattr(pool, "connection_kwargs", {})
        self._pack = None if own else _hiredis_pack
        # redis-py's connection classes are only partly typed: Any.
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def call(self, *args: Any) -> Any:
        """Send one command and return its raw reply (bytes, int, list: no callbacks).

        Raises what redis-py's connection raises: ``ResponseError`` (and its
        subclasses such as ``NoScriptError``) for an error reply, connection
        and timeout errors for a broken socket.
        """
        conn = self._take()
        try:
            pack = self._pack
            if pack is not None:
                conn.send_packed_command((pack(args),))
            else:
                conn.send_command(*args)
            reply = conn.read_response()
        except ResponseError:
            self._idle.append(conn)  # an error reply: the connection is in step
            raise
        except BaseException:
            self._drop(conn)
            raise
        self._idle.append(conn)
        return reply

    def _take(self) -> Any:
        if self._pid != os.getpid():
            self._idle = []  # the parent's sockets: not ours to use or close
            self._pid = os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            return self._pool.get_connection()  # connected and checked
        try:
            stale = conn.can_read()  # data left over, or closed by the server
        except (RedisConnectionError, OSError):
            stale = True
        if stale:
            try:
                conn.disconnect()
                conn.connect()
            except BaseException:
                self._pool.release(conn)
                raise
        return conn

    def _drop(self, conn: Any) -> None:
        try:
            conn.disconnect()
        finally:
            self._pool.release(conn)

    def give_back(self) -> None:
        """Return every idle connection to the pool (before using the pool directly)."""
        if self._pid != os.getpid():
            return
        idle = self._idle
        while True:
            try:
                conn = idle.pop()  # atomic: a concurrent call() may append meanwhile
            except IndexError:
                return
            self._pool.release(conn)
