"""``memory://``: sessions in this process's memory, for tests and one-process apps.

Every operation runs under one lock through the shared pure steps, so the
contract is the same as on the distributed stores; lease waiters are woken by
a condition variable.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TypeVar

from ..errors import ConfigError
from ._local import LocalStore, Step
from .state import DELETE, StoredRecord, is_purgeable
from ._url import mask_url, query_options, split_url
from .base import Ended, RecordInfo, RecordKey

__all__ = ["MemoryStore"]

T = TypeVar("T")


class MemoryStore(LocalStore):
    """A dict of ``StoredRecord`` guarded by one lock."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._records: dict[RecordKey, StoredRecord] = {}
        self._cond = threading.Condition()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://``: no host, no path, no parameters (a store of its own per call)."""
        query_options(url, {})  # any parameter is unknown
        parts = split_url(url)
        if parts.netloc or parts.path or parts.fragment:
            raise ConfigError(
                f"{mask_url(url)}: the memory store has no host, path or name; write memory:// "
                "(each store made is a new, empty one)"
            )
        return cls(url)

    def _step(self, key: RecordKey, step: Step[T], *, notify: bool = False) -> T:
        with self._cond:
            result, outcome = step(self._records.get(key))
            if outcome is DELETE:
                self._records.pop(key, None)
            elif isinstance(outcome, StoredRecord):
                self._records[key] = outcome
            if notify:
                self._cond.notify_all()
            return result

    def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        with self._cond:
            # Released between the caller's LOCKED load and this call (a
            # thread hop under asyncio): waiting would miss that release's
            # notification and sleep out the holder's whole lease.
            record = self._records.get(key)
            if record is not None and record.lease_token is not None:
                self._cond.wait(timeout)

    def records(self, app_id: str | None = None) -> Iterator[RecordInfo]:
        with self._cond:
            items = list(self._records.items())
        for key, rec in items:
            if app_id is None or key.app_id == app_id:
                yield rec.info(key)

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        with self._cond:
            doomed = [
                key
                for key, rec in self._records.items()
                if is_purgeable(rec, now=now, grace=grace)
            ][:limit]
            for key in doomed:
                del self._records[key]
            return len(doomed)

    def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As ``purge``, returning what each deleted record held (same lock)."""
        with self._cond:
            doomed = [
                (key, rec)
                for key, rec in self._records.items()
                if is_purgeable(rec, now=now, grace=grace)
            ][:limit]
            for key, _ in doomed:
                del self._records[key]
            return [Ended(key, dict(rec.fields), rec.invalidated) for key, rec in doomed]

    def close(self) -> None:
        with self._cond:
            self._cond.notify_all()
