"""Worker functions for the policy process tests, and a crew that runs them.

Each worker is a plain top-level function, so the same code runs in a real
OS process (``multiprocessing`` spawn context: a fresh interpreter that opens
the store by URL) or in a thread of this process (for ``memory://``, whose
records cannot leave the process: the threads share one ``MemoryStore``).
Workers build their own ``SessionManager`` with their own ``node_id`` and
coordinate only through the store; the events and barriers passed in only
pause a worker at a named point so the test can order the two sides.

Every loop is bounded in count and in time (``DEADLINE``).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoal import ConflictError, LockLost, SessionManager
from shoal.stores.base import Store

DEADLINE = 120.0  # seconds any single worker may run before it gives up
MAX_ATTEMPTS = 10_000  # optimistic retries of one increment before giving up

_SPAWN = multiprocessing.get_context("spawn")


class Waitable(Protocol):
    def wait(self, timeout: float | None = None) -> Any: ...


class Settable(Protocol):
    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


def manager_for(store: str | Store, app_id: str, node_id: str, **options: Any) -> SessionManager:
    """A worker's own manager; ``store`` is a URL (process) or the shared store (thread)."""
    return SessionManager(store, app_id=app_id, node_id=node_id, **options)


def _close(manager: SessionManager, store: str | Store) -> None:
    if isinstance(store, str):  # a process opened its own store; threads share one
        manager.close()


# -- workers ------------------------------------------------------------------


def increment(
    store: str | Store,
    app_id: str,
    sid: str,
    policy: str,
    key: str,
    count: int,
    node_id: str,
    start: Waitable,
) -> dict[str, int]:
    """``count`` requests that each add 1 to ``session[key]``; retries conflicts."""
    manager = manager_for(store, app_id, node_id, policy=policy, lock_timeout=60.0)
    conflicts = 0
    deadline = time.monotonic() + DEADLINE
    start.wait(60)
    try:
        for _ in range(count):
            for _attempt in range(MAX_ATTEMPTS):
                try:
                    with manager.open(sid) as session:
                        session[key] = session[key] + 1
                    break
                except ConflictError:
                    conflicts += 1  # optimistic: run the request again
            else:
                raise AssertionError(f"{node_id}: an increment conflicted {MAX_ATTEMPTS} times")
            if time.monotonic() > deadline:
                raise AssertionError(f"{node_id}: out of time")
    finally:
        _close(manager, store)
    return {"conflicts": conflicts}


def hold_lock(
    store: str | Store,
    app_id: str,
    sid: str,
    node_id: str,
    lease: float,
    locked: Settable,
    die: Settable,
) -> str:
    """Take the lease, change the session, then stall until killed (or abandoned).

    A process running this is killed with SIGKILL while it waits; a thread
    (memory store) returns without commit or rollback, which leaves the store
    in the same state: a lease nobody will ever release.
    """
    manager = manager_for(store, app_id, node_id, policy="serialized", lock_lease=lease)
    session = manager.begin(sid, lazy=False)
    session["n"] = -1  # never saved
    locked.set()
    die.wait(DEADLINE)
    return "abandoned"


def late_save(
    store: str | Store,
    app_id: str,
    sid: str,
    node_id: str,
    lease: float,
    loaded: Settable,
    resume: Settable,
) -> str:
    """Load with the lease, pause, then try to save after the lease expired."""
    manager = manager_for(store, app_id, node_id, policy="serialized", lock_lease=lease)
    try:
        session = manager.begin(sid, lazy=False)
        session["n"] = 999
        loaded.set()
        if not resume.wait(DEADLINE):
            return "never resumed"
        try:
            manager.commit(session)
        except LockLost:
            return "LockLost"
        return "saved"
    finally:
        _close(manager, store)


def serialized_set(
    store: str | Store, app_id: str, sid: str, node_id: str, lease: float, value: int
) -> dict[str, float]:
    """One serialized request that waits for the lease and sets ``n``."""
    manager = manager_for(
        store, app_id, node_id, policy="serialized", lock_lease=lease, lock_timeout=8 * lease
    )
    began = time.monotonic()
    try:
        with manager.open(sid) as session:
            waited = time.monotonic() - began
            session["n"] = value
    finally:
        _close(manager, store)
    return {"waited": waited}


def load_then_save(
    store: str | Store,
    app_id: str,
    sid: str,
    policy: str,
    node_id: str,
    loaded: Settable,
    go: Settable,
) -> dict[str, Any]:
    """Load (and change) the session, pause, then save it: the late writer."""
    manager = manager_for(store, app_id, node_id, policy=policy, lock_timeout=30.0)
    try:
        session = manager.begin(sid, lazy=False)
        assert not session.is_new
        session["n"] = session["n"] + 1
        loaded.set()
        if not go.wait(DEADLINE):
            return {"outcome": "never resumed"}
        try:
            outcome = manager.commit(session)
        except Exception as exc:  # reported to the test, which names it
            return {"outcome": type(exc).__name__}
        return {"outcome": "cleared" if outcome.clear else "saved"}
    finally:
        _close(manager, store)


def invalidate(store: str | Store, app_id: str, sid: str, policy: str, node_id: str) -> bool:
    """Log the session out; returns whether a live session was found."""
    manager = manager_for(store, app_id, node_id, policy=policy, lock_timeout=30.0)
    try:
        with manager.open(sid) as session:
            found = not session.is_new
            if found:
                session.invalidate()
    finally:
        _close(manager, store)
    return found


def saver(
    store: str | Store,
    app_id: str,
    node_id: str,
    sessions: int,
    abandoned: int,
    idle: float,
    grace: float,
    run_for: float,
    start: Waitable,
) -> dict[str, Any]:
    """Keep ``sessions`` sessions alive by saving each shortly before it expires.

    A live session lost is one that loads as new although the load ended
    before ``idle`` had passed since its last save began, or whose save is
    refused as ended before the expiry its load reported: neither expired
    nor purgeable, so only a wrong delete can explain it. A session whose
    save came too late (a slow machine) is counted apart and replaced.
    """
    manager = manager_for(
        store, app_id, node_id, idle_timeout=idle, touch_interval=idle / 2, grace=grace
    )
    result: dict[str, Any] = {"saves": 0, "lost_live": [], "late": 0, "abandoned": []}
    try:
        start.wait(60)
        ids: list[str] = []
        saved_at: list[float] = []
        for _ in range(sessions):
            began = time.time()
            with manager.open() as session:
                session["n"] = 0
            ids.append(session.id)
            saved_at.append(began)
        for _ in range(abandoned):
            with manager.open() as session:
                session["left"] = True
            result["abandoned"].append(session.id)
        stop = time.monotonic() + min(run_for, DEADLINE)
        while time.monotonic() < stop:
            for i, sid in enumerate(ids):
                if time.time() - saved_at[i] < idle * 0.85:
                    continue  # save it near its expiry, not before
                session = manager.begin(sid, lazy=False)
                loaded_by = time.time()
                if session.is_new and saved_at[i]:
                    if loaded_by < saved_at[i] + idle:
                        result["lost_live"].append(round(saved_at[i] + idle - loaded_by, 3))
                    else:
                        result["late"] += 1
                session["n"] = session.get("n", 0) + 1
                live_until = session.expires  # as loaded, the load's touch included
                began = time.time()  # the commit's clock reads no earlier than this
                if manager.commit(session).clear:
                    # Refused as ended: fine if it expired meanwhile, not if it was deleted.
                    ended_by = time.time()
                    if ended_by < live_until:
                        result["lost_live"].append(round(live_until - ended_by, 3))
                    else:
                        result["late"] += 1
                    saved_at[i] = 0.0  # due again at once, to be replaced by a new session
                    continue
                ids[i], saved_at[i] = session.id, began
                result["saves"] += 1
            time.sleep(0.005)  # pacing between passes over this worker's sessions
    finally:
        _close(manager, store)
    return result


def purger(
    store: str | Store, app_id: str, node_id: str, idle: float, grace: float, stop: Settable
) -> dict[str, int]:
    """Purge in a loop, as a cron job on another node would, until told to stop."""
    manager = manager_for(
        store, app_id, node_id, idle_timeout=idle, touch_interval=idle / 2, grace=grace
    )
    passes = deleted = 0
    deadline = time.monotonic() + DEADLINE
    try:
        while not stop.wait(0.01) and time.monotonic() < deadline:
            deleted += manager.purge()
            passes += 1
    finally:
        _close(manager, store)
    return {"passes": passes, "deleted": deleted}


# -- running workers ------------------------------------------------------------


def _child(fn: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
    try:
        out.put(("ok", fn(*args)))
    except BaseException:
        out.put(("error", traceback.format_exc()))


@dataclass
class Worker:
    """One running worker: a spawned process or a thread."""

    name: str
    process: Any = None
    thread: threading.Thread | None = None
    _out: Any = None
    _result: list[tuple[str, Any]] = field(default_factory=list)

    def result(self, timeout: float = DEADLINE) -> Any:
        """The worker's return value; its traceback as an AssertionError if it failed."""
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise AssertionError(f"{self.name} did not finish within {timeout}s")
            status, value = self._result[0]
        else:
            try:
                status, value = self._out.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"{self.name} gave no result within {timeout}s "
                    f"(exit code {self.process.exitcode})"
                ) from None
            self.process.join(10)
        if status != "ok":
            raise AssertionError(f"{self.name} failed:\n{value}")
        return value

    def kill(self) -> None:
        """SIGKILL the process: no cleanup, no rollback, no unlock."""
        assert self.process is not None, "threads cannot be killed; abandon them instead"
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(10)


class Crew:
    """Starts workers the way the store kind needs: processes, or threads for memory."""

    def __init__(self, threads: bool) -> None:
        self.threads = threads
        self.workers: list[Worker] = []

    def event(self) -> Settable:
        return threading.Event() if self.threads else _SPAWN.Event()

    def barrier(self, parties: int) -> Waitable:
        return threading.Barrier(parties) if self.threads else _SPAWN.Barrier(parties)

    def start(self, name: str, fn: Callable[..., Any], *args: Any) -> Worker:
        if self.threads:
            worker = Worker(name)

            def run() -> None:
                try:
                    worker._result.append(("ok", fn(*args)))
                except BaseException:
                    worker._result.append(("error", traceback.format_exc()))

            worker.thread = threading.Thread(target=run, name=name, daemon=True)
            worker.thread.start()
        else:
            out = _SPAWN.Queue()
            process = _SPAWN.Process(target=_child, args=(fn, args, out), name=name, daemon=True)
            process.start()
            worker = Worker(name, process=process, _out=out)
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        """Kill any process this crew started that is still running (test teardown)."""
        for worker in self.workers:
            if worker.process is not None and worker.process.is_alive():
                worker.process.kill()
                worker.process.join(10)


def logins(
    store: str | Store,
    app_id: str,
    user: str,
    count: int,
    max_sessions: int,
    node_id: str,
    start: Waitable,
) -> list[str]:
    """``count`` logins of ``user`` (new sessions), under ``max_sessions_per_principal``."""
    manager = manager_for(store, app_id, node_id, max_sessions_per_principal=max_sessions)
    made = []
    start.wait(60)
    try:
        for _ in range(count):
            with manager.open() as session:
                session.principal = user
            made.append(session.id)
    finally:
        _close(manager, store)
    return made
