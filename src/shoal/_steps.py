"""The manager's algorithm as sans-I/O steps, and the two runners that drive them.

Every request step of ``SessionManager`` (load with its lock wait, touch,
commit, create, rotate, release, replica in and out, once-only consume, the
principal index) is written once, as a generator that *yields* each store
operation it needs and receives the answer (or has the store's exception
thrown in). ``run`` answers with a sync store, ``arun`` awaits an async one:
the same generator serves ``manager.open()`` and ``manager.open_async()``,
so there is no second copy of the algorithm to drift (STYLE.md rule 3).

An operation is a plain tuple ``(role, name, args, kwargs)``: ``role`` says
which store answers it (``SESSION``: this request's store, which may be the
replica's view of the store; ``BASE``: the manager's store itself), ``name``
the ``Store`` method. ``call(...)`` operations carry a blocking function that is
not a store method (publishing an event): ``run`` calls it, ``arun`` runs it
in a store thread. A store object that is itself written as steps (the
replica's per-request view, a ``StepsStore``) is driven by a nested run.

Why tuples built by ``StoreRef`` methods rather than one class per
operation: a request makes two or three of them. A first version with an
operation class, its dispatch and a ``yield from`` layer per store call
cost +14% and +40% on the two ``memory://`` request kinds measured; this
one costs +7% (callgrind, docs/decisions.md). Rejected: generating the sync
manager from an async source (httpcore's ``unasync``): two copies in the
tree that ``duplicates`` rightly reports, and a build step to keep honest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from typing import Any, Final, TypeVar

from .errors import SessionStateError
from .stores.base import Change, LockRequest, NewRecord, RecordKey, Touch

__all__ = [
    "BASE", "SESSION", "OffLoop", "Op", "Steps", "StepsStore", "StoreRef", "arun", "call", "run",
]

_T = TypeVar("_T")

Op = tuple[int, Any, tuple[Any, ...], dict[str, Any]]
"""``(role, store method name or function, args, kwargs)``."""

Steps = Generator[Op, Any, _T]
"""A step of the algorithm: yields operations, returns its result."""

SESSION_ROLE: Final = 0
BASE_ROLE: Final = 1
CALL_ROLE: Final = 2


class StoreRef:
    """Builds the operations of one store role; typed like the ``Store`` contract."""

    __slots__ = ("role",)

    def __init__(self, role: int) -> None:
        self.role = role

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> Op:
        return (self.role, "load", (key,), {"now": now, "touch": touch, "lock": lock})

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> Op:
        return (self.role, "create", (key, record), {"now": now, "lock": lock})

    def apply(self, key: RecordKey, change: Change, *, now: float) -> Op:
        return (self.role, "apply", (key, change), {"now": now})

    def invalidate(self, key: RecordKey, *, now: float, lease_token: str | None = None) -> Op:
        return (self.role, "invalidate", (key,), {"now": now, "lease_token": lease_token})

    def unlock(self, key: RecordKey, token: str) -> Op:
        return (self.role, "unlock", (key, token), {})

    def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> Op:
        return (self.role, "renew", (key, token), {"now": now, "lease": lease})

    def wait_unlocked(self, key: RecordKey, timeout: float) -> Op:
        return (self.role, "wait_unlocked", (key, timeout), {})


SESSION: Final = StoreRef(SESSION_ROLE)
"""This request's store: the manager's, or the replica's view of it."""
BASE: Final = StoreRef(BASE_ROLE)
"""The manager's store itself (the principal index, the replica view's own calls)."""


def call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Op:
    """An operation that runs blocking ``func`` (in a store thread under ``arun``)."""
    return (CALL_ROLE, func, args, kwargs)


class StepsStore:
    """Base of a store whose methods are steps themselves (the replica's request view).

    The runners drive such a store's answer as a nested run on the same
    stores; an ``isinstance`` check, since a missing-attribute probe costs
    an exception on every plain store call.
    """


class OffLoop:
    """A sync store for the sync calls on a session of ``abegin``: never on the loop.

    A worker thread (a sync FastAPI endpoint, a thread pool) may call
    ``session.consume_token()`` or ``renew_lock()`` on such a session: the
    call goes to the sync store. On the event loop's own thread it would
    block every other request, so it is refused with the awaitable to use.
    """

    __slots__ = ("_store",)

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return getattr(self._store, name)
        raise SessionStateError(
            f"a blocking store call ({name}) on the event loop: in async code use the "
            "awaitable form (await session.aconsume_token(...), await session.arenew_lock(), "
            "await manager.acommit(...)), or call it from a worker thread"
        )


def run(steps: Steps[_T], stores: Sequence[Any]) -> _T:
    """Drive ``steps`` to its result, answering each operation with a sync store call."""
    send, throw = steps.send, steps.throw
    try:
        op = send(None)
        while True:
            role, name, args, kwargs = op
            try:
                if role == CALL_ROLE:
                    value = name(*args, **kwargs)
                else:
                    target = stores[role]
                    value = getattr(target, name)(*args, **kwargs)
                    if isinstance(target, StepsStore):
                        value = run(value, stores)
            except BaseException as exc:  # noqa: BLE001 - the step decides, as a call would
                op = throw(exc)
            else:
                op = send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def arun(steps: Steps[_T], stores: Sequence[Any]) -> _T:
    """Drive ``steps`` to its result, awaiting each operation on an async store.

    The same loop as ``run``, with each answer awaited.
    """
    send, throw = steps.send, steps.throw
    try:
        op = send(None)
        while True:
            role, name, args, kwargs = op
            try:
                if role == CALL_ROLE:
                    from .stores._threaded import run_in_thread

                    value = await run_in_thread(name, *args, **kwargs)
                else:
                    target = stores[role]
                    called = getattr(target, name)(*args, **kwargs)
                    nested = isinstance(target, StepsStore)
                    value = await (arun(called, stores) if nested else called)
            except BaseException as exc:  # noqa: BLE001 - cancellation too: finally blocks run
                op = throw(exc)
            else:
                op = send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
