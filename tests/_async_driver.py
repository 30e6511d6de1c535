"""``AsyncDriven``: a ``SessionManager`` whose sync API runs every step through ``arun``.

So the manager contract suite, written against ``begin``/``commit``/``open``,
runs unchanged a second time on the async path: each load, lock wait,
commit, rotation, consume and principal-index step is awaited on the
store's async twin (native Redis, store threads elsewhere) on one event
loop in a thread of its own, while the test's thread waits for it. The
sessions, the lazy load and ``session.lock()`` behave as under ``begin``;
only the runner differs, which is exactly what the suite must check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from shoal import SessionManager
from shoal._steps import Steps, arun
from shoal.manager import _Handle
from shoal.stores.base import Store

from ._async_facade import LoopThread

T = TypeVar("T")


class AsyncDriven(SessionManager):
    """The manager under test, every store call awaited (``driver="async"``)."""

    def __init__(self, store: Store, *, store_url: str | None = None, **options: Any) -> None:
        super().__init__(store, **options)
        # Network stores get their native async twin, opened from the URL.
        self._store_url = store_url
        self._portal = LoopThread()
        self._runner = self._await

    def _handle(
        self, session_id: str | None, policy: Any, replica: str | None, aio: bool
    ) -> _Handle:
        handle = super()._handle(session_id, policy, replica, aio=True)
        assert handle.astores is not None
        handle.stores = handle.astores  # what this driver's runner answers with
        return handle

    def _base_stores(self) -> tuple[Any, Any]:
        return (self._async_store(), self._async_store())

    def _await(self, steps: Steps[T], stores: Sequence[Any]) -> T:
        return self._portal.run(arun(steps, stores))

    def stop(self) -> None:
        """Close the async twin on its loop and end the loop (the test closes the store)."""
        astore, self._astore = self._astore, None
        try:
            if astore is not None:
                self._portal.run(astore.aclose())
        finally:
            self._portal.stop()
