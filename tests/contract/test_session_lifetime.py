"""A session's own lifetime (``Session.set_lifetime``) on every store under every policy.

What Django's ``set_expiry`` (seconds, datetime) and Flask's ``permanent``
need from the core: the lifetime is the whole session's, kept in the session
(so every process sees it), used by every save, and a session whose lifetime
passed is never loaded again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shoal import ManualClock, Policy, SessionManager
from shoal.ids import hash_id
from shoal.stores.base import RecordKey, Store

from .conftest import ManagerFactory

IDLE, ABSOLUTE = 600.0, 3600.0


@pytest.fixture(params=[p.value for p in Policy])
def policy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _manager(
    make: ManagerFactory,
    store: Store,
    clock: ManualClock,
    policy: str,
    app_id: str,
    touch: float | None,
) -> SessionManager:
    return make(
        store, app_id=app_id, policy=policy, clock=clock, idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE, touch_interval=touch, grace=60, lock_timeout=2.0,
    )  # fmt: skip


@pytest.fixture
def manager(
    managers: ManagerFactory, store: Store, clock: ManualClock, policy: str, app_id: str
) -> Iterator[SessionManager]:
    """A manager whose reads never touch (as the Django adapter's)."""
    yield _manager(managers, store, clock, policy, app_id, touch=None)


@pytest.fixture
def touching(
    managers: ManagerFactory, store: Store, clock: ManualClock, policy: str, app_id: str
) -> SessionManager:
    """A manager whose reads extend sessions every 60 s (shoal's default behaviour)."""
    return _manager(managers, store, clock, policy, app_id, touch=60)


def _start(manager: SessionManager, seconds: float | None = None, until: float | None = None) -> str:
    with manager.open() as session:
        session["user"] = "ada"
        session.set_lifetime(seconds, until=until)
    return session.id


def _loads(manager: SessionManager, sid: str) -> bool:
    with manager.open(sid, read_only=True) as session:
        return not session.is_new and session.get("user") == "ada"


def _ends_at(manager: SessionManager, clock: ManualClock, sid: str, end: float) -> None:
    """The session loads until just before ``end``, and never from ``end`` on."""
    clock.advance(end - 1 - clock())
    assert _loads(manager, sid)
    clock.advance(1)
    assert not _loads(manager, sid)


def _expires(manager: SessionManager, sid: str) -> float:
    key = RecordKey(manager.app_id, hash_id(sid))
    [info] = [r for r in manager.store.records(manager.app_id) if r.key == key]
    return info.expires


def test_a_sliding_lifetime_shorter_than_idle_timeout(
    manager: SessionManager, clock: ManualClock
) -> None:
    sid = _start(manager, seconds=100)
    assert _expires(manager, sid) == clock() + 100
    _ends_at(manager, clock, sid, clock() + 100)


@pytest.mark.parametrize("save", ["a write", "refresh() alone"])
def test_each_save_slides_the_sessions_own_lifetime(
    manager: SessionManager, clock: ManualClock, save: str
) -> None:
    sid = _start(manager, seconds=100)
    clock.advance(80)
    with manager.open(sid) as session:
        assert session.lifetime == 100
        if save == "a write":
            session["n"] = 1
        else:
            session.refresh()  # Django's SESSION_SAVE_EVERY_REQUEST
            assert not session.modified
    assert session.id == sid and _expires(manager, sid) == clock() + 100
    _ends_at(manager, clock, sid, clock() + 100)  # 180 s after creation


def test_a_sliding_lifetime_longer_than_idle_timeout(
    manager: SessionManager, clock: ManualClock
) -> None:
    sid = _start(manager, seconds=2000)
    clock.advance(IDLE + 1)  # past the manager's idle timeout
    _ends_at(manager, clock, sid, clock() - IDLE - 1 + 2000)


def test_a_fixed_end_is_not_moved_by_saves(manager: SessionManager, clock: ManualClock) -> None:
    end = clock() + 300
    sid = _start(manager, until=end)
    clock.advance(200)
    with manager.open(sid) as session:
        assert session.lifetime_until == end and session.lifetime is None
        session["n"] = 1
    assert _expires(manager, sid) == end
    _ends_at(manager, clock, sid, end)


def test_a_fixed_end_holds_even_when_reads_touch(
    touching: SessionManager, clock: ManualClock
) -> None:
    end = clock() + 100
    sid = _start(touching, until=end)
    clock.advance(90)  # this read touches: never past the fixed end
    assert _loads(touching, sid)
    assert _expires(touching, sid) == end
    clock.advance(10)
    with touching.open(sid) as session:
        assert session.is_new and session.id != sid
        session["after"] = 1  # a save goes to a new record, not the ended one
    assert not _loads(touching, sid)


@pytest.mark.parametrize("seconds", [100.0, 2000.0], ids=["shorter", "longer"])
def test_a_reads_touch_slides_by_the_sessions_own_lifetime(
    touching: SessionManager, clock: ManualClock, seconds: float
) -> None:
    """Longer: a touch must not cut a 2000 s session to the manager's 600 s;
    shorter: nor keep a 100 s session for 600 s (Flask's permanent sessions)."""
    sid = _start(touching, seconds=seconds)
    clock.advance(61)  # past the touch interval: this read touches
    assert _loads(touching, sid)
    assert _expires(touching, sid) == clock() + seconds


def test_a_touched_session_with_its_own_lifetime_still_saves(
    touching: SessionManager, clock: ManualClock
) -> None:
    """The touch's write keeps the request's version and lease in step (serialized fencing)."""
    sid = _start(touching, seconds=2000)
    clock.advance(61)
    with touching.open(sid) as session:
        session["n"] = 1
    assert session.id == sid and _expires(touching, sid) == clock() + 2000
    with touching.open(sid, read_only=True) as again:
        assert again["n"] == 1 and again.lifetime == 2000


def test_a_readers_touch_does_not_fence_out_a_serialized_holder(
    store: Store, clock: ManualClock, app_id: str
) -> None:
    """The second touch (own lifetime) changes no version: the lease holder still saves."""
    manager = SessionManager(
        store, app_id=app_id, policy="serialized", clock=clock, idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE, touch_interval=60, lock_lease=600, lock_timeout=2.0,
    )  # fmt: skip
    sid = _start(manager, seconds=2000)
    with manager.open(sid) as holder:
        holder["n"] = 1
        clock.advance(61)
        assert _loads(manager, sid)  # read-only: no lock, but it touches
        assert _expires(manager, sid) == clock() + 2000
    with manager.open(sid, read_only=True) as again:
        assert again["n"] == 1


def test_the_absolute_timeout_caps_any_lifetime(
    manager: SessionManager, clock: ManualClock
) -> None:
    sid = _start(manager, seconds=10 * ABSOLUTE)
    assert _expires(manager, sid) == clock() + ABSOLUTE


def test_a_lifetime_in_the_past_ends_the_session_at_its_save(
    manager: SessionManager, clock: ManualClock
) -> None:
    assert not _loads(manager, _start(manager, seconds=-10))
    assert not _loads(manager, _start(manager, until=clock() - 10))


def test_no_lifetime_goes_back_to_the_managers(manager: SessionManager, clock: ManualClock) -> None:
    sid = _start(manager, seconds=100)
    with manager.open(sid) as session:
        session.set_lifetime()
        assert session.lifetime is None and "_shoal.lifetime" not in session
    assert _expires(manager, sid) == clock() + IDLE
    with manager.open(sid) as session:
        session.set_lifetime()  # none to drop: nothing changes, nothing is saved
        assert not session.modified


def test_rotate_keeps_the_lifetime(manager: SessionManager, clock: ManualClock) -> None:
    sid = _start(manager, seconds=100)
    with manager.open(sid) as session:
        session.rotate()
    assert session.id != sid
    assert _expires(manager, session.id) == clock() + 100
    with manager.open(session.id) as moved:
        assert moved.lifetime == 100


def test_invalidate_drops_the_lifetime(manager: SessionManager, clock: ManualClock) -> None:
    sid = _start(manager, seconds=100)
    with manager.open(sid) as session:
        session.invalidate()
        session["flash"] = "logged out"
    assert session.lifetime is None
    assert _expires(manager, session.id) == clock() + IDLE


def test_reads_never_extend_without_touch_interval(
    manager: SessionManager, clock: ManualClock
) -> None:
    sid = _start(manager)
    for _ in range(5):
        clock.advance(IDLE / 5 - 1)
        assert _loads(manager, sid)
    clock.advance(6)
    assert not _loads(manager, sid)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "10", True])
def test_a_lifetime_must_be_a_finite_number(manager: SessionManager, bad: object) -> None:
    with manager.open() as session, pytest.raises(ValueError, match="finite number"):
        session.set_lifetime(bad)  # type: ignore[arg-type]


def test_seconds_and_until_are_exclusive(manager: SessionManager, clock: ManualClock) -> None:
    with manager.open() as session, pytest.raises(ValueError, match="not both"):
        session.set_lifetime(10, until=clock() + 10)


def test_refresh_stores_a_new_empty_session(manager: SessionManager, clock: ManualClock) -> None:
    with manager.open() as session:
        session.refresh()
    assert _expires(manager, session.id) == clock() + IDLE
    with manager.open(session.id) as stored:
        assert not stored.is_new and dict(stored) == {}


def test_a_lifetime_long_past_is_purged_at_once(manager: SessionManager, clock: ManualClock) -> None:
    kept = _start(manager, seconds=100)
    _start(manager, seconds=-3600)  # ended an hour ago: older than the grace period
    _start(manager, until=clock() - 3600)
    manager.purge()  # Redis may have dropped them already, by their native TTL
    assert [r.key.id_hash for r in manager.store.records(manager.app_id)] == [hash_id(kept)]
