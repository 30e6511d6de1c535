"""Near cache: a bounded per-process LRU of recently read sessions.

Only ``read_only`` opens are served from it (every write loads from the
store and is checked by version there, so a stale entry can never cause a
lost update or bring back a logged-out session). An entry is dropped by an
``updated``, ``invalidated``, ``rotated`` or ``expired`` event from any
node, and is never served past ``max_age`` (the staleness bound when an
event is late or missed) nor past the record's own expiry.

A load that raced with a drop is not cached: ``ticket()`` before the store
read, ``put(..., ticket)`` after it; a drop in between wins. Time comes
from an injected monotonic clock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..ids import session_ref
from ..stores.base import Record, RecordKey

__all__ = ["NearCache", "NearCacheStats"]


@dataclass
class NearCacheStats:
    """Counters, one set per cache."""

    hits: int = 0
    misses: int = 0
    drops: int = 0
    refused: int = 0  # loads not cached because a drop raced with them


class NearCache:
    """``size`` entries at most, each served for ``max_age`` seconds at most."""

    def __init__(
        self, size: int = 1000, max_age: float = 5.0, *, monotonic: Callable[[], float] | None = None
    ) -> None:
        self.size, self.max_age = size, max_age
        self._now = monotonic or time.monotonic
        # Keyed by (app_id, hashed ref): what events name. The full key is
        # kept and compared, so a ref shared by two ids only costs a reload.
        self._entries: OrderedDict[tuple[str, str], tuple[RecordKey, Record, float]] = (
            OrderedDict()
        )
        self._generation = 0
        self._cleared_at = -1
        self._dropped_at: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = NearCacheStats()

    def get(self, key: RecordKey, *, now: float) -> Record | None:
        """The cached record while fresh and unexpired (``now``: the manager's clock)."""
        ref = _ref(key)
        with self._lock:
            entry = self._entries.get(ref)
            if entry is None or entry[0] != key:
                self.stats.misses += 1
                return None
            _, record, stored_at = entry
            if self._now() - stored_at >= self.max_age or record.expires <= now:
                del self._entries[ref]
                self.stats.misses += 1
                return None
            self._entries.move_to_end(ref)
            self.stats.hits += 1
            return record

    def ticket(self) -> int:
        """Taken before a store read whose result may be ``put``."""
        with self._lock:
            return self._generation

    def put(self, key: RecordKey, record: Record, ticket: int) -> None:
        """Cache ``record`` unless ``key`` was dropped (or all cleared) since ``ticket``."""
        ref = _ref(key)
        with self._lock:
            if self._dropped_at.get(ref, -1) > ticket or self._cleared_at > ticket:
                self.stats.refused += 1
                return
            self._entries[ref] = (key, record, self._now())
            self._entries.move_to_end(ref)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, key: RecordKey) -> None:
        """Forget ``key`` and refuse any load of it that is still running."""
        self.drop_ref(key.app_id, session_ref(key.id_hash))

    def drop_ref(self, app_id: str, ref: str) -> None:
        """Drop the entry named by an event's hashed ref (and refuse racing loads)."""
        with self._lock:
            self._generation += 1
            self._dropped_at[(app_id, ref)] = self._generation
            self._dropped_at.move_to_end((app_id, ref))
            while len(self._dropped_at) > 4 * self.size:  # bounded: a mark matters briefly
                self._dropped_at.popitem(last=False)
            if self._entries.pop((app_id, ref), None) is not None:
                self.stats.drops += 1

    def clear(self) -> None:
        """Forget everything (events were missed: nothing cached can be trusted)."""
        with self._lock:
            self._generation += 1
            self._cleared_at = self._generation
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _ref(key: RecordKey) -> tuple[str, str]:
    return (key.app_id, session_ref(key.id_hash))
