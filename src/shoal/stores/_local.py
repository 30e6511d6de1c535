"""A base for stores that run the contract's pure steps under their own atomicity.

A local store (memory, SQLite, file, dbm) only says how to run one step on
one record atomically (``_step``) and how to list and purge; every contract
method below is the same for all of them, so it is written once here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .state import (
    DELETE,
    StoredRecord,
    apply_step,
    create_step,
    invalidate_step,
    load_step,
    renew_step,
    unlock_step,
)
from .base import ApplyResult, Change, LoadResult, LockRequest, NewRecord, RecordKey, Touch

__all__ = ["LocalStore", "Step"]

T = TypeVar("T")
Step = Callable[[StoredRecord | None], tuple[T, Any]]
"""Reads the current record (or None); returns (result, new record | DELETE | None)."""


class LocalStore:
    """The contract methods, expressed as pure steps run by ``_step``."""

    url: str

    def _step(self, key: RecordKey, step: Step[T], *, notify: bool = False) -> T:
        """Run ``step`` on ``key``'s record atomically and write back its outcome.

        ``notify`` asks to wake lease waiters afterwards where the store can.
        """
        raise NotImplementedError

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        return self._step(key, lambda r: load_step(r, now=now, touch=touch, lock=lock))

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        return self._step(key, lambda r: create_step(r, record, now=now, lock=lock))

    def apply(self, key: RecordKey, change: Change, *, now: float) -> ApplyResult:
        return self._step(key, lambda r: apply_step(r, change, now=now), notify=change.release)

    def invalidate(self, key: RecordKey, *, now: float, lease_token: str | None = None) -> bool:
        return self._step(
            key, lambda r: invalidate_step(r, now=now, lease_token=lease_token), notify=True
        )

    def delete(self, key: RecordKey) -> bool:
        return self._step(
            key, lambda r: (r is not None, DELETE if r is not None else None), notify=True
        )

    def unlock(self, key: RecordKey, token: str) -> None:
        self._step(key, lambda r: (None, unlock_step(r, token)), notify=True)

    def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> bool:
        return self._step(key, lambda r: renew_step(r, token, now=now, lease=lease))
