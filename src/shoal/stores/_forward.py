"""The ``AsyncStore`` methods, each forwarded to one ``_forward(name, ...)``.

Two wrappers move an async store's calls somewhere: ``ThreadedStore`` (a
sync store's call in a store thread) and ``AsyncBreakerStore`` (a native
async store's call through the circuit breaker). Both inherit the
contract's signatures from here and write only ``_forward``, so the list of
methods and their keyword arguments exists once. Rejected:
``__getattr__`` forwarding, which would hide the signatures from mypy and
from ``isinstance(x, AsyncStore)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import (
    ApplyResult,
    Change,
    LoadResult,
    LockRequest,
    NewRecord,
    RecordInfo,
    RecordKey,
    Touch,
)

__all__ = ["AsyncForwarder"]


class AsyncForwarder:
    """``AsyncStore``'s methods on top of ``_forward(method_name, *args, **kwargs)``."""

    url: str

    async def _forward(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        result: LoadResult = await self._forward("load", key, now=now, touch=touch, lock=lock)
        return result

    async def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        return bool(await self._forward("create", key, record, now=now, lock=lock))

    async def apply(self, key: RecordKey, change: Change, *, now: float) -> ApplyResult:
        result: ApplyResult = await self._forward("apply", key, change, now=now)
        return result

    async def invalidate(
        self, key: RecordKey, *, now: float, lease_token: str | None = None
    ) -> bool:
        return bool(await self._forward("invalidate", key, now=now, lease_token=lease_token))

    async def delete(self, key: RecordKey) -> bool:
        return bool(await self._forward("delete", key))

    async def unlock(self, key: RecordKey, token: str) -> None:
        await self._forward("unlock", key, token)

    async def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> bool:
        return bool(await self._forward("renew", key, token, now=now, lease=lease))

    async def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        await self._forward("wait_unlocked", key, timeout)

    async def records(self, app_id: str | None = None) -> Sequence[RecordInfo]:
        listed: Sequence[RecordInfo] = await self._forward("records", app_id)
        return listed

    async def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        return int(await self._forward("purge", now=now, grace=grace, limit=limit))

    async def aclose(self) -> None:
        await self._forward("aclose")
