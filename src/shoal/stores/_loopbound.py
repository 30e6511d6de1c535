"""One client per running event loop and process, for the native async stores.

``redis.asyncio`` connections and psycopg's ``AsyncConnectionPool`` belong to
the loop that made them: their sockets are registered with it, their locks
and conditions bind to it on first use, and another loop awaiting them fails
("attached to a different loop") or hangs. A store object, though, is made
once (at import, by ``SessionManager(url)``) and may be awaited from several
loops: a test that calls ``asyncio.run`` twice, a server that runs a loop
per thread. ``PerLoop`` gives each running loop a client of its own, made
on first use there; a loop that is gone drops its entry (weakly keyed).

Fork: in a child process, the parent's clients are forgotten, never closed
(their sockets are the parent's); they are kept in ``_INHERITED`` so no
finalizer closes them either, and the child makes its own.

Rejected: binding a store to the first loop that uses it and raising on any
other (every ``asyncio.run`` in a test or script would need a new store),
and one client shared by every loop (not something either library supports).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop", "aclose_all"]

T = TypeVar("T")

_INHERITED: list[object] = []


class PerLoop(Generic[T]):
    """``make()`` once per running event loop of this process."""

    __slots__ = ("_by_loop", "_make", "_pid")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._pid = os.getpid()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's ``T``, made now if it has none."""
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            _INHERITED.extend(self._by_loop.values())
            self._by_loop = weakref.WeakKeyDictionary()
            self._pid = os.getpid()
        made = self._by_loop.get(loop)
        if made is None:
            made = self._by_loop[loop] = self._make()
        return made

    def take_all(self) -> list[tuple[asyncio.AbstractEventLoop, T]]:
        """Every loop's ``T`` of this process, forgotten here (for closing)."""
        if self._pid != os.getpid():
            return []
        taken = list(self._by_loop.items())
        self._by_loop = weakref.WeakKeyDictionary()
        return taken


async def aclose_all(clients: PerLoop[T], aclose: Callable[[T], Awaitable[None]]) -> None:
    """Close every loop's client: this loop's awaited, another running loop's on it.

    A client of a loop that has stopped cannot be closed from here (its
    transports need that loop): it is dropped, and its sockets close with it.
    """
    here = asyncio.get_running_loop()
    for loop, client in clients.take_all():
        if loop is here:
            await aclose(client)
        elif loop.is_running() and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(_quietly(aclose(client)), loop)


async def _quietly(closing: Awaitable[None]) -> None:
    try:
        await closing
    except Exception:  # noqa: BLE001 - closing another loop's sockets: nothing to report
        pass
