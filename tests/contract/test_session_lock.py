"""``session.lock()`` and ``session.renew_lock()`` on every store.

A view asks for the serialized policy before the lazy load; a long request
renews its lease; a lease that was lost fences both the renewal and the save.
"""

from __future__ import annotations

import pytest

from shoal import LockLost, LockTimeout, ManualClock, SessionManager, SessionStateError
from shoal.stores.base import Store

from .conftest import ManagerFactory

LEASE = 10.0


@pytest.fixture
def manager(managers: ManagerFactory, store: Store, clock: ManualClock, app_id: str) -> SessionManager:
    return managers(
        store, app_id=app_id, clock=clock, policy="merge", lock_lease=LEASE, lock_timeout=0.2
    )


def start(manager: SessionManager) -> str:
    with manager.open() as session:
        session["n"] = 0
    return session.id


def test_lock_before_first_access_holds_the_session(manager: SessionManager) -> None:
    sid = start(manager)
    session = manager.begin(sid)
    session.lock()
    session["n"] += 1
    with pytest.raises(LockTimeout):
        manager.begin(sid, policy="serialized", lazy=False)
    with manager.open(sid, read_only=True) as reader:
        assert reader["n"] == 0, "readers take no lock and never wait"
    manager.commit(session)
    with manager.open(sid, policy="serialized") as after:
        assert after["n"] == 1, "the commit saved and released the lease"


def test_lock_after_the_load_is_refused(manager: SessionManager) -> None:
    sid = start(manager)
    session = manager.begin(sid)
    assert session["n"] == 0
    with pytest.raises(SessionStateError, match="call it first"):
        session.lock()
    manager.rollback(session)
    touched = manager.begin(sid)
    _ = touched.id  # metadata loads the session too
    with pytest.raises(SessionStateError, match="before any access"):
        touched.lock()
    manager.rollback(touched)


def test_lock_on_a_read_only_or_closed_session_is_refused(manager: SessionManager) -> None:
    sid = start(manager)
    reader = manager.begin(sid, read_only=True)
    with pytest.raises(SessionStateError, match="read_only"):
        reader.lock()
    manager.commit(reader)
    with pytest.raises(SessionStateError, match="committed"):
        reader.lock()


def test_renew_keeps_the_lease_past_its_first_term(
    manager: SessionManager, clock: ManualClock
) -> None:
    sid = start(manager)
    session = manager.begin(sid)
    session.lock()
    session["n"] = 1
    clock.advance(LEASE * 0.8)
    session.renew_lock()
    clock.advance(LEASE * 0.8)  # past the first term, within the renewed one
    with pytest.raises(LockTimeout):
        manager.begin(sid, policy="serialized", lazy=False)
    manager.commit(session)
    with manager.open(sid) as after:
        assert after["n"] == 1


def test_renew_after_the_lease_was_taken_raises_lock_lost(
    manager: SessionManager, clock: ManualClock
) -> None:
    sid = start(manager)
    late = manager.begin(sid, policy="serialized")
    late["n"] = 99
    clock.advance(LEASE + 1)
    with manager.open(sid, policy="serialized") as other:
        other["n"] = 1
    with pytest.raises(LockLost):
        late.renew_lock()
    with pytest.raises(LockLost):
        manager.commit(late)
    with manager.open(sid) as after:
        assert after["n"] == 1, "the fenced save wrote nothing"


def test_renew_of_an_expired_unclaimed_lease_raises_lock_lost(
    manager: SessionManager, clock: ManualClock
) -> None:
    sid = start(manager)
    late = manager.begin(sid, policy="serialized")
    late["n"] = 99
    clock.advance(LEASE + 1)
    with pytest.raises(LockLost):
        manager.renew_lock(late)
    with pytest.raises(LockLost):
        manager.commit(late)
    with manager.open(sid) as after:
        assert after["n"] == 0


def test_renew_without_a_lease_does_nothing(manager: SessionManager) -> None:
    sid = start(manager)
    unlocked = manager.begin(sid)
    unlocked.renew_lock()  # not loaded yet: the lease would be taken fresh at load
    assert unlocked["n"] == 0
    unlocked.renew_lock()  # merge holds no lease
    manager.commit(unlocked)
    with pytest.raises(SessionStateError, match="committed"):
        unlocked.renew_lock()
