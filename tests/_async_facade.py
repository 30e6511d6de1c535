"""A sync ``Store`` over an ``AsyncStore``: each call awaited on a loop of its own thread.

So the store contract suite, written against the sync ``Store``, runs
unchanged on the native async stores and on ``ThreadedStore``: every call
goes through the async code (``await store.load(...)``...) on one event
loop that lives for the facade's life, in a daemon thread. Rejected:
``asyncio.run`` per call (a new loop each time: the async stores would make
a new client per call, which is not how they are used) and anyio's blocking
portal (the same idea, one more dependency for tests).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from shoal.stores.base import AsyncStore

T = TypeVar("T")

PATIENCE = 60.0  # bound of every awaited call seen from the test's thread


class LoopThread:
    """An event loop running in a daemon thread, for sync code that awaits on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="async-facade", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro``'s result, awaited on the loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(PATIENCE)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(PATIENCE)
        self.loop.close()


class SyncFacade(LoopThread):
    """``store``'s coroutines run on the facade's loop; results returned synchronously."""

    def __init__(self, make: Callable[[], AsyncStore]) -> None:
        super().__init__()
        self.store = make()
        self.url = self.store.url

    def __repr__(self) -> str:
        return f"<SyncFacade {self.store!r}>"

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(method(*args, **kwargs))

        return call

    def records(self, app_id: str | None = None) -> Iterator[Any]:
        return iter(self.run(self.store.records(app_id)))

    def close(self) -> None:
        try:
            self.run(self.store.aclose())
        finally:
            self.stop()
