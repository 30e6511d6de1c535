"""Records for the tests of the local stores (file://, dbm://): a fixed time, one builder."""

from __future__ import annotations

from shoal.stores.base import NewRecord

__all__ = ["IDLE", "T0", "new"]

T0 = 1_700_000_000.0
IDLE = 100.0


def new(now: float = T0, **fields: bytes) -> NewRecord:
    """A record created at ``now``, idle-expiring after ``IDLE``, absolutely after ten."""
    return NewRecord(created=now, expires=now + IDLE, absolute_expires=now + 10 * IDLE,
                     fields=fields)
