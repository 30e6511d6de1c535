"""Any sync store as an ``AsyncStore``: each call in a worker thread, off the loop.

For the stores whose calls block in C (SQLite, dbm, the file store's
locks) or hold a Python lock (memory), a thread is the right design under
asyncio, and for Redis or PostgreSQL it is the fallback when a store object
(not a URL) was handed to the manager. The sync store keeps its breaker,
its timeouts and its errors; this wrapper only moves the call.

A call that is cancelled (the client went away) still waits for its thread
to finish before the cancellation goes on: a rollback must never run while
the commit it follows is still in the store. Rejected: ``asyncio.to_thread``
(it returns at cancellation while the thread goes on) and the loop's
default executor (``min(32, cpus + 4)`` threads: six on a two-core host,
where six requests waiting on a lease under ``serialized`` would stall
every other one).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ._forward import AsyncForwarder
from .base import Store

__all__ = ["LoopStore", "ThreadedStore", "run_in_thread"]

_T = TypeVar("_T")

# Threads a process may have in store calls at once (anyio's default limit
# is 40; a waiter under ``serialized`` holds one for up to lock_timeout).
MAX_THREADS = 64

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """The process's store thread pool, made again in a forked child."""
    global _pool, _pool_pid
    pid = os.getpid()
    if _pool is None or _pool_pid != pid:
        with _pool_lock:
            if _pool is None or _pool_pid != pid:
                _pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="shoal-store")
                _pool_pid = pid
    return _pool


async def run_in_thread(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``func(*args, **kwargs)`` in a store thread; a cancellation waits for it first."""
    future = asyncio.get_running_loop().run_in_executor(
        _executor(), lambda: func(*args, **kwargs)
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # The thread cannot be stopped: let it finish (its outcome is the
        # store's), then go on being cancelled.
        try:
            await future
        except BaseException:  # noqa: BLE001 - the cancellation is what propagates
            pass
        raise


class ThreadedStore(AsyncForwarder):
    """``store``'s calls awaited, each run in a store thread.

    ``owned=False``: ``aclose`` leaves ``store`` open, for its owner (a
    manager whose sync and async requests share one store) to close.
    """

    def __init__(self, store: Store, *, owned: bool = True) -> None:
        self.store = store
        self.url = store.url
        self._owned = owned

    def __repr__(self) -> str:
        return f"<ThreadedStore {self.store!r}>"

    async def _forward(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        if name == "aclose":
            return await run_in_thread(self.store.close) if self._owned else None
        if name == "records":
            # The listing is read in full in the thread: a generator would
            # do its I/O on the loop, one step at a time.
            return await run_in_thread(lambda: list(self.store.records(*args, **kwargs)))
        return await run_in_thread(getattr(self.store, name), *args, **kwargs)


class LoopStore(ThreadedStore):
    """An in-process store whose calls never wait (memory): called on the loop itself.

    A ``MemoryStore`` call holds its lock for the few microseconds of one
    dict update, as any code on the loop does; only ``wait_unlocked``
    waits (for another request's lease), and it alone goes to a store
    thread. Measured through the ASGI middleware on ``memory://``, two
    thread hops per request cost ~4x the whole request (docs/benchmarks.md,
    issue 11). Not for SQLite, dbm or the file store: their calls wait on
    the disk and on other processes' locks.
    """

    def __repr__(self) -> str:
        return f"<LoopStore {self.store!r}>"

    async def _forward(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        if name in ("wait_unlocked", "aclose"):
            return await super()._forward(name, *args, **kwargs)
        if name == "records":
            return list(self.store.records(*args, **kwargs))
        return getattr(self.store, name)(*args, **kwargs)
