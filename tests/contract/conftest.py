"""The manager contract suite runs twice: on the sync path and on the async path.

``driver="sync"``: ``SessionManager`` as sync code uses it. ``driver="async"``:
``AsyncDriven``, the same manager with every step awaited on the store's
async twin (``tests/_async_driver.py``). A test asks for ``managers`` (a
factory taking ``SessionManager``'s arguments) instead of constructing
``SessionManager`` itself, and so passes on both paths or fails on one.

The async driver runs on every store whose async twin is a client of its
own (Redis, its Cluster and Sentinel, PostgreSQL) and on two of the stores
whose twin is the sync store in a store thread (``ThreadedStore``): memory
(in-process state) and SQLite (a database file). The other threaded ones
(file, dbm, MySQL) would run that same wrapper again over a sync store the
sync driver already covers; they are deselected (not skipped), to keep CI
well under its time budget. tests/adapters/test_asgi_stores.py still runs
every store through the ASGI middleware's async path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shoal import SessionManager
from shoal.stores.base import Store

from .._async_driver import AsyncDriven

DRIVERS = ["sync", "async"]
# Stores whose async twin is ThreadedStore over the sync store, left to the sync
# driver (the docstring says why); memory and SQLite keep both drivers.
SYNC_DRIVER_ONLY = frozenset({"file", "dbm", "mysql"})

ManagerFactory = Callable[..., SessionManager]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """Which runner answers the manager's steps: ``run`` (sync) or ``arun`` (async)."""
    return str(request.param)


@pytest.fixture
def managers(driver: str, store_url: str) -> Iterator[ManagerFactory]:
    """``SessionManager(store, **options)`` on this test's driver."""
    made: list[AsyncDriven] = []

    def make(store: Store, **options: Any) -> SessionManager:
        if driver == "sync":
            return SessionManager(store, **options)
        manager = AsyncDriven(store, store_url=store_url, **options)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the async driver on the stores of ``SYNC_DRIVER_ONLY``."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params: dict[str, object] = callspec.params if callspec is not None else {}
        redundant = params.get("driver") == "async" and params.get("store_url") in SYNC_DRIVER_ONLY
        (dropped if redundant else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
