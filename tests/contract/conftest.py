"""The manager contract suite runs twice: on the sync path and on the async path.

``driver="sync"``: ``SessionManager`` as sync code uses it. ``driver="async"``:
``AsyncDriven``, the same manager with every step awaited on the store's
async twin (``tests/_async_driver.py``). A test asks for ``managers`` (a
factory taking ``SessionManager``'s arguments) instead of constructing
``SessionManager`` itself, and so passes on both paths or fails on one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shoal import SessionManager
from shoal.stores.base import Store

from .._async_driver import AsyncDriven

DRIVERS = ["sync", "async"]

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
