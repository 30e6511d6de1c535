"""Event channels: how an event reaches every process that shares a store.

A channel only moves encoded events (bytes) for one ``app_id``; the hub
(``shoal.cluster.hub``) decides what to send and what a received event means.
Each store uses its own means, never a home-made network layer:

==============  ==========================================================
memory://       an in-process bus per store object (one process only)
sqlite://       an append-only ``shoal_events`` table with bounded
                retention, polled by each process's listener thread
redis*://       pub/sub (PUBLISH is broadcast on every node of a Cluster)
postgresql://   LISTEN/NOTIFY; events with values go by reference to a
                row (NOTIFY payloads stop at 8000 bytes)
others          none: events stay in the process, the near cache is off
==============  ==========================================================

``channel_for(store)`` picks one; ``None`` means the store has none.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from ..stores.base import Store

__all__ = ["Channel", "Deliver", "MemoryChannel", "channel_for", "has_channel", "inner_store"]

Deliver = Callable[[bytes], None]
"""Called on the listener thread with each encoded event received."""


class Channel(Protocol):
    """Publishes encoded events and delivers every event published for the app."""

    name: str
    """A short label for logs and ``shoal watch`` ("redis pub/sub", ...)."""

    def publish(self, data: bytes) -> None:
        """Send one encoded event to every process (this one included)."""
        ...

    def start(self, deliver: Deliver) -> None:
        """Start delivering received events to ``deliver`` (idempotent)."""
        ...

    def close(self) -> None:
        """Stop the listener thread and release its connection."""
        ...


def inner_store(store: Store) -> Any:
    """The store under any wrappers: a circuit breaker (``BreakerStore.store``) or
    a wrapper that keeps the wrapped store as ``.inner`` (e.g. a counting proxy)."""
    seen: Any = store
    for _ in range(4):  # a few layers at most; never loop on a strange object
        own = vars(seen) if hasattr(seen, "__dict__") else {}
        inner = own.get("store") if "breaker" in own else own.get("inner")
        if inner is None or not isinstance(inner, Store):
            return seen
        seen = inner
    return seen


_BUSES: weakref.WeakKeyDictionary[Any, dict[str, list[Deliver]]] = weakref.WeakKeyDictionary()
_BUSES_LOCK = threading.Lock()


class MemoryChannel:
    """Every manager of one ``MemoryStore`` object sees the others' events, at once."""

    name = "memory bus"

    def __init__(self, store: Any, app_id: str) -> None:
        with _BUSES_LOCK:
            self._bus = _BUSES.setdefault(store, {}).setdefault(app_id, [])
        self._deliver: Deliver | None = None

    def publish(self, data: bytes) -> None:
        for deliver in tuple(self._bus):
            deliver(data)

    def start(self, deliver: Deliver) -> None:
        if self._deliver is None:
            self._deliver = deliver
            with _BUSES_LOCK:
                self._bus.append(deliver)

    def close(self) -> None:
        with _BUSES_LOCK:
            if self._deliver is not None and self._deliver in self._bus:
                self._bus.remove(self._deliver)
        self._deliver = None


_WITH_CHANNEL = frozenset({"MemoryStore", "SQLiteStore", "RedisStore", "PostgresStore"})


def has_channel(store: Store) -> bool:
    """True when ``channel_for(store, ...)`` gives a channel (without opening one)."""
    return type(inner_store(store)).__name__ in _WITH_CHANNEL


def channel_for(store: Store, app_id: str, **options: Any) -> Channel | None:
    """The event channel of ``store`` for ``app_id``, or None when it has none.

    ``options``: ``poll`` (SQLite: seconds between polls), ``retention``
    (SQLite: events kept).
    """
    inner = inner_store(store)
    kind = type(inner).__name__
    if kind == "MemoryStore":
        return MemoryChannel(inner, app_id)
    if kind == "SQLiteStore":
        from ._sqlite_channel import SQLiteChannel

        return SQLiteChannel(inner.path, app_id, **options)
    if kind == "RedisStore":
        from ._redis_channel import RedisChannel

        return RedisChannel(inner, app_id)
    if kind == "PostgresStore":
        from ._pg_channel import PostgresChannel

        return PostgresChannel(inner, app_id)
    return None
