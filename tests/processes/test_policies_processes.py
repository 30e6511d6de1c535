"""The four policies, fencing, purge and logout under real concurrency.

Every store kind of ``tests/conftest.py`` except memory runs its workers as
real OS processes (spawn context), each with its own node id, opening the
store by URL: they coordinate only through the store. ``memory://`` cannot
be shared between processes, so its param (``memory-threads``) runs the
same worker functions in threads of this process on one ``MemoryStore``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shoal import SessionManager
from shoal.ids import hash_id
from shoal.stores import open_store
from shoal.stores.base import LoadStatus, RecordKey, Store

from ..conftest import STORE_KINDS
from . import _workers as w

WORKERS = 8
INCREMENTS = 200  # per worker: the 8 x 200
POLICIES = ["lossy", "merge", "optimistic", "serialized"]
LEASE = 1.5  # short, so the kill test waits for it in real time


@dataclass
class Target:
    """Where the workers meet: a store URL for processes, or one shared memory store."""

    kind: str
    url: str
    crew: w.Crew
    shared: Store | None = None
    opened: list[Store] = field(default_factory=list)

    @property
    def store(self) -> str | Store:
        return self.shared if self.shared is not None else self.url

    def manager(self, app_id: str, **options: object) -> SessionManager:
        """The test's own manager (node ``test``), on its own connection."""
        store = self.shared
        if store is None:
            store = open_store(self.url)
            self.opened.append(store)
        return SessionManager(store, app_id=app_id, node_id="test", **options)  # type: ignore[arg-type]


KINDS = [
    pytest.param(kind, id="memory-threads" if kind == "memory" else kind)
    for kind in sorted(STORE_KINDS)
]


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    kind = str(request.param)
    url = STORE_KINDS[kind](request, tmp_path)
    threads = kind == "memory"
    crew = w.Crew(threads=threads)
    shared = open_store(url) if threads else None
    target = Target(kind, url, crew, shared)
    try:
        yield target
    finally:
        crew.stop_all()
        for store in [*target.opened, *([shared] if shared is not None else [])]:
            store.close()


@pytest.fixture
def app_id() -> str:
    return f"p{uuid.uuid4().hex[:12]}"


def new_session(manager: SessionManager, **values: object) -> str:
    with manager.open() as session:
        session.update(values)
    return session.id


def run_increments(target: Target, app_id: str, sid: str, policy: str, keys: list[str]) -> int:
    """WORKERS workers x INCREMENTS increments; returns the conflicts retried."""
    start = target.crew.barrier(WORKERS)
    workers = [
        target.crew.start(
            f"{policy}-{i}", w.increment, target.store, app_id, sid, policy, keys[i],
            INCREMENTS, f"node-{i}", start,
        )
        for i in range(WORKERS)
    ]
    return sum(worker.result()["conflicts"] for worker in workers)


# -- 8 x 200 increments ----------------------------------------------------------


@pytest.mark.parametrize("policy", ["serialized", "optimistic"])
def test_increments_of_one_key_are_exact(target: Target, app_id: str, policy: str) -> None:
    manager = target.manager(app_id)
    sid = new_session(manager, n=0)
    conflicts = run_increments(target, app_id, sid, policy, ["n"] * WORKERS)
    with manager.open(sid) as session:
        assert session["n"] == WORKERS * INCREMENTS
    print(f"{target.kind} {policy}: exact; {conflicts} conflicts retried")


def test_merge_keeps_every_key_of_concurrent_writers(target: Target, app_id: str) -> None:
    manager = target.manager(app_id)
    keys = [f"k{i}" for i in range(WORKERS)]
    sid = new_session(manager, **{key: 0 for key in keys})
    run_increments(target, app_id, sid, "merge", keys)
    with manager.open(sid) as session:
        assert {key: session[key] for key in keys} == {key: INCREMENTS for key in keys}


def test_lossy_loses_increments_and_says_how_many(target: Target, app_id: str) -> None:
    manager = target.manager(app_id)
    sid = new_session(manager, n=0)
    run_increments(target, app_id, sid, "lossy", ["n"] * WORKERS)
    with manager.open(sid) as session:
        final = session["n"]
    assert 0 < final <= WORKERS * INCREMENTS
    lost = WORKERS * INCREMENTS - final
    print(f"{target.kind} lossy: {lost} of {WORKERS * INCREMENTS} increments lost")


# -- a dead lock holder -----------------------------------------------------------


def test_a_killed_holder_frees_the_session_after_its_lease(target: Target, app_id: str) -> None:
    manager = target.manager(app_id)
    sid = new_session(manager, n=0)
    locked, die = target.crew.event(), target.crew.event()
    holder = target.crew.start(
        "holder", w.hold_lock, target.store, app_id, sid, "node-holder", LEASE, locked, die
    )
    assert locked.wait(60), "the holder never took the lock"
    key = RecordKey(app_id, hash_id(sid))
    until = next(i.locked_until for i in manager.store.records(app_id) if i.key == key)
    assert until is not None and until <= time.time() + LEASE, "the lease ends within LEASE"
    if target.crew.threads:
        die.set()  # the thread returns without commit or rollback: an orphaned lease
        assert holder.result() == "abandoned"
    else:
        holder.kill()
    # The next request waits for the lease (lock_timeout is 8 leases), then gets it.
    waited = w.serialized_set(target.store, app_id, sid, "node-next", LEASE, 1)["waited"]
    print(f"{target.kind}: the next request waited {waited:.2f}s for a {LEASE}s lease")
    with manager.open(sid) as session:
        assert session["n"] == 1, "the dead holder's change was never written"


@pytest.mark.parametrize("taken", [True, False], ids=["taken-by-another", "unclaimed"])
def test_a_late_save_after_the_lease_expired_is_refused(
    target: Target, app_id: str, taken: bool
) -> None:
    manager = target.manager(app_id)
    sid = new_session(manager, n=0)
    loaded, resume = target.crew.event(), target.crew.event()
    late = target.crew.start(
        "late", w.late_save, target.store, app_id, sid, "node-late", LEASE, loaded, resume
    )
    assert loaded.wait(60), "the late writer never loaded"
    if taken:
        # Another process waits for the paused holder's lease, then saves.
        other = target.crew.start(
            "other", w.serialized_set, target.store, app_id, sid, "node-other", LEASE, 1
        )
        other.result()
    else:
        key = RecordKey(app_id, hash_id(sid))
        until = next(i.locked_until for i in manager.store.records(app_id) if i.key == key)
        assert until is not None
        time.sleep(max(0.0, until - time.time()) + 0.1)  # one wait, to a deadline the store set
    resume.set()
    assert late.result() == "LockLost"
    with manager.open(sid) as session:
        assert session["n"] == (1 if taken else 0), "the fenced save wrote nothing"


# -- purge against saves near expiry ------------------------------------------------


def test_purge_in_a_loop_deletes_no_live_session(target: Target, app_id: str) -> None:
    idle, grace, run_for, savers = 2.0, 1.0, 4.5, 4
    start = target.crew.barrier(savers)
    stop = target.crew.event()
    purge = target.crew.start(
        "purger", w.purger, target.store, app_id, "node-purger", idle, grace, stop
    )
    workers = [
        target.crew.start(
            f"saver-{i}", w.saver, target.store, app_id, f"node-{i}", 3, 2, idle, grace,
            run_for, start,
        )
        for i in range(savers)
    ]
    results = [worker.result() for worker in workers]
    stop.set()
    purged = purge.result()
    lost = [x for r in results for x in r["lost_live"]]
    saves = sum(r["saves"] for r in results)
    late = sum(r["late"] for r in results)
    print(f"{target.kind}: {saves} saves near expiry, {late} too late, purge {purged}")
    assert saves >= savers, "the savers did save near expiry"
    assert purged["passes"] > 0
    assert lost == [], "live sessions were deleted (seconds they had left)"
    # The abandoned sessions expired meanwhile: gone or at least never loaded.
    manager = target.manager(app_id, idle_timeout=idle, touch_interval=idle / 2)
    for sid in (s for r in results for s in r["abandoned"]):
        with manager.open(sid, read_only=True) as session:
            assert session.is_new


# -- logout against a late save --------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_invalidate_wins_over_a_save_loaded_earlier(
    target: Target, app_id: str, policy: str
) -> None:
    manager = target.manager(app_id)
    sid = new_session(manager, n=0)
    loaded, go = target.crew.event(), target.crew.event()
    writer = target.crew.start(
        "writer", w.load_then_save, target.store, app_id, sid, policy, "node-writer", loaded, go
    )
    assert loaded.wait(60), "the writer never loaded"
    # A serialized logout would wait for the writer's lease; a logout route
    # that must not wait opens without a lock (invalidate ignores leases).
    logout_policy = "merge" if policy == "serialized" else policy
    logout = target.crew.start(
        "logout", w.invalidate, target.store, app_id, sid, logout_policy, "node-logout"
    )
    assert logout.result() is True
    go.set()
    assert writer.result() == {"outcome": "cleared"}, "the late save was dropped"
    key = RecordKey(app_id, hash_id(sid))
    assert manager.store.load(key, now=time.time()).status is LoadStatus.INVALIDATED
    with manager.open(sid) as session:
        assert session.is_new
