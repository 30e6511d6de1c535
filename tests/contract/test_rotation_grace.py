"""Rotation grace (issue 14, item 3), on every store under every policy.

After ``rotate()`` the old id leads to the new session for ``rotation_grace``
seconds, and is dead afterwards; writes made through it land on the new
session. Time is a ``ManualClock``: no test sleeps to make the grace pass.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shoal import ConfigError, ConflictError, ManualClock, Policy, SessionManager
from shoal._rotation import is_pointer, open_pointer, pointer_key
from shoal.ids import hash_id
from shoal.stores.base import RecordKey, Store

from .conftest import ManagerFactory

POLICIES = [p.value for p in Policy]
GRACE = 30.0


@pytest.fixture(params=POLICIES)
def policy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manager(
    managers: ManagerFactory, store: Store, clock: ManualClock, policy: str, app_id: str
) -> Iterator[SessionManager]:
    yield managers(
        store, app_id=app_id, policy=policy, clock=clock, idle_timeout=600, touch_interval=60,
        absolute_timeout=3600, grace=60, lock_timeout=5.0, rotation_grace=GRACE,
    )


def start(manager: SessionManager, **values: object) -> str:
    with manager.open() as session:
        session.update(values)
    return session.id


def rotate(manager: SessionManager, sid: str, **values: object) -> str:
    with manager.open(sid) as session:
        session.rotate()
        session.update(values)
    assert session.id != sid
    return session.id


def test_the_old_id_leads_to_the_new_session_within_the_grace(
    manager: SessionManager, clock: ManualClock
) -> None:
    old = start(manager, cart=[1])
    new = rotate(manager, old, user="ada")
    clock.advance(GRACE - 1)
    session = manager.begin(old)
    assert session["cart"] == [1] and session["user"] == "ada"
    session["seen"] = True  # written through the old id
    outcome = manager.commit(session)
    assert session.id == new and outcome.send_id == new  # the new id is sent again
    with manager.open(new) as current:
        assert dict(current) == {"cart": [1], "user": "ada", "seen": True}
    # A read through the old id resends the new id too (its Set-Cookie was lost).
    reader = manager.begin(old)
    assert reader.get("user") == "ada"
    assert manager.commit(reader).send_id == new


def test_the_old_id_is_dead_after_the_grace(manager: SessionManager, clock: ManualClock) -> None:
    old = start(manager, cart=[1])
    new = rotate(manager, old)
    clock.advance(GRACE + 1)
    session = manager.begin(old)
    assert session.get("cart") is None
    outcome = manager.commit(session)
    assert outcome.clear and outcome.send_id is None  # the stale cookie is dropped
    with manager.open(new) as current:
        assert current["cart"] == [1]


def test_rotate_with_grace_0_kills_the_old_id_at_once(manager: SessionManager) -> None:
    old = start(manager, cart=[1])
    with manager.open(old) as session:
        session.rotate(grace=0)  # at login
    with manager.open(old) as again:
        assert again.is_new and dict(again) == {}
    assert not any(is_pointer(info.key) for info in manager.store.records(manager.app_id))


def test_a_manager_with_rotation_grace_0_writes_no_pointer(
    store: Store, clock: ManualClock, app_id: str
) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock, rotation_grace=0)
    old = start(manager, a=1)
    rotate(manager, old)
    with manager.open(old) as again:
        assert again.is_new


def test_logout_through_the_old_id_within_the_grace_ends_both(manager: SessionManager) -> None:
    old = start(manager, a=1)
    new = rotate(manager, old)
    with manager.open(old) as session:
        session.invalidate()
    for sid in (old, new):
        with manager.open(sid) as gone:
            assert gone.is_new


def test_an_in_flight_write_on_the_old_id_lands_on_the_new_session(
    manager: SessionManager, policy: str
) -> None:
    old = start(manager, cart=[1])
    in_flight = manager.begin(old, policy="merge" if policy == "serialized" else None)
    assert in_flight["cart"] == [1]  # loaded before the rotation
    new = rotate(manager, old, user="ada")
    in_flight["note"] = "written after the rotation"
    outcome = manager.commit(in_flight)
    assert outcome.send_id == new and in_flight.id == new
    with manager.open(new) as current:
        assert current["note"] == "written after the rotation" and current["cart"] == [1]
        # lossy: the whole record, last write wins (the rotation's "user" is overwritten).
        assert current.get("user") == (None if policy == "lossy" else "ada")


def test_an_in_flight_write_after_the_grace_is_dropped(
    manager: SessionManager, clock: ManualClock
) -> None:
    old = start(manager, cart=[1])
    in_flight = manager.begin(old, policy="merge")
    assert in_flight["cart"] == [1]
    new = rotate(manager, old)
    clock.advance(GRACE + 1)
    in_flight["note"] = "too late"
    assert manager.commit(in_flight).clear
    with manager.open(new) as current:
        assert "note" not in current


@pytest.mark.parametrize("changed", [False, True], ids=["unchanged", "changed"])
def test_optimistic_checks_carry_over_by_value(
    store: Store, clock: ManualClock, app_id: str, changed: bool
) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock, policy="optimistic")
    old = start(manager, count=1, other=0)
    in_flight = manager.begin(old)
    count = in_flight["count"]
    with manager.open(old) as session:
        session.rotate()
        if changed:
            session["count"] = 5
        else:
            session["other"] = 1
    in_flight["count"] = count + 1
    if changed:
        with pytest.raises(ConflictError) as info:
            manager.commit(in_flight)
        assert info.value.keys == ("count",)
    else:
        new = manager.commit(in_flight).send_id
        assert new is not None
        with manager.open(new) as current:
            assert dict(current) == {"count": 2, "other": 1}


def test_concurrent_requests_on_the_old_id_during_the_grace(manager: SessionManager) -> None:
    """Eight requests on the old id race a rotation: none is logged out, none is lost."""
    old = start(manager, n=0)
    rotator = manager.begin(old)
    rotator.rotate()
    rotator["user"] = "ada"
    # Under serialized the rotator holds the lease from its load: the others
    # wait for it, then find the tombstone and follow the pointer.
    results: dict[int, str | None] = {}
    errors: list[BaseException] = []
    started = threading.Barrier(9, timeout=30)

    def request(number: int) -> None:
        try:
            started.wait()
            with manager.open(old) as session:
                session[f"k{number}"] = number
            results[number] = session.id
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    new = manager.commit(rotator).send_id
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    with manager.open(new) as current:
        landed = {key for key in current if key.startswith("k")}
    # A request that loaded before the rotation and saved before it wrote to
    # the old record, which the rotation copied only if it came first: what
    # every request that saw the new id wrote is on the new session.
    on_new = {f"k{n}" for n, sid in results.items() if sid == new}
    # lossy writes whole records (last writer wins, what it loaded included):
    # only "no one is logged out" holds there, as checked above and below.
    if manager.policy is not Policy.LOSSY:
        assert on_new <= landed
    assert set(results.values()) <= {old, new}
    if manager.policy is Policy.SERIALIZED:
        assert on_new == {f"k{n}" for n in range(8)}  # all waited, then followed


def test_concurrent_requests_on_the_old_id_after_the_grace_get_fresh_sessions(
    manager: SessionManager, clock: ManualClock
) -> None:
    old = start(manager, n=0)
    new = rotate(manager, old)
    clock.advance(GRACE + 1)
    ids: list[str] = []

    def request() -> None:
        with manager.open(old) as session:
            assert session.is_new
            session["x"] = 1
        ids.append(session.id)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(ids) == 4 and new not in ids and old not in ids
    with manager.open(new) as current:
        assert "x" not in current


def test_the_pointer_reveals_neither_id(manager: SessionManager) -> None:
    old = start(manager, a=1)
    new = rotate(manager, old)
    pointers = [i for i in manager.store.records(manager.app_id) if is_pointer(i.key)]
    assert [p.key for p in pointers] == [pointer_key(manager.app_id, old)]
    key = pointers[0].key
    assert key.id_hash != hash_id(old) and old not in key.id_hash and new not in key.id_hash
    record = manager.store.load(key, now=manager.clock()).record
    assert record is not None
    (sealed,) = record.fields.values()
    assert new.encode() not in sealed and old.encode() not in sealed
    assert open_pointer(manager.app_id, old, sealed) == new
    assert open_pointer(manager.app_id, new, sealed) is None  # only the old id opens it
    assert open_pointer("other-app", old, sealed) is None


def test_a_pointer_is_not_a_session(manager: SessionManager) -> None:
    old = start(manager, a=1)
    rotate(manager, old)
    key: RecordKey = pointer_key(manager.app_id, old)
    assert is_pointer(key) and not is_pointer(RecordKey(manager.app_id, hash_id(old)))


@pytest.mark.parametrize("value", [-1, float("inf"), float("nan"), "30", True])
def test_a_bad_rotation_grace_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match="rotation_grace"):
        SessionManager("memory://", rotation_grace=value)  # type: ignore[arg-type]
    manager = SessionManager("memory://")
    with manager.open() as session:
        with pytest.raises(ConfigError, match="rotate"):
            session.rotate(grace=value)  # type: ignore[arg-type]


def test_merge_carries_a_write_saved_during_the_rotating_request(
    store: Store, clock: ManualClock, app_id: str
) -> None:
    manager = SessionManager(store, app_id=app_id, clock=clock, policy="merge")
    old = start(manager, cart=[1], gone=1)
    rotator = manager.begin(old)
    rotator.rotate()
    rotator["user"] = "ada"
    with manager.open(old) as other:  # saved while the rotating request runs
        other["note"] = "kept"
        del other["gone"]
    new = manager.commit(rotator).send_id
    assert new is not None
    with manager.open(new) as current:
        assert dict(current) == {"cart": [1], "user": "ada", "note": "kept"}


@pytest.mark.parametrize("policy_name", POLICIES)
def test_the_pointer_costs_no_store_call_on_a_live_session(
    local_store: Store, clock: ManualClock, app_id: str, policy_name: str
) -> None:
    """The ordinary load and save make the same store calls with the grace on as off."""
    from tests._counting import CountingStore

    calls: dict[float, list[list[str]]] = {}
    for grace in (0.0, GRACE):
        counting = CountingStore(local_store)
        manager = SessionManager(
            counting, app_id=f"{app_id}{int(grace)}", clock=clock, policy=policy_name,
            rotation_grace=grace,
        )  # fmt: skip
        sid = start(manager, n=0)
        seen = []
        for body in ("save", "load"):
            counting.calls.clear()
            with manager.open(sid) as session:
                if body == "save":
                    session["n"] += 1
                else:
                    session.get("n")
            seen.append(list(counting.calls))
        calls[grace] = seen
    assert calls[GRACE] == calls[0.0]
    expected_load = ["load", "unlock"] if policy_name == "serialized" else ["load"]
    assert calls[GRACE] == [["load", "apply"], expected_load]


def test_with_replicas_the_old_cookies_follow_the_pointer_and_never_resurrect(
    local_store: Store, clock: ManualClock, app_id: str
) -> None:
    manager = SessionManager(
        local_store, app_id=app_id, clock=clock, replica=True, rotation_grace=GRACE,
        secret_keys=["rotation-grace-replica-key-0123456789abcdef"],
    )  # fmt: skip
    first = manager.begin(None)
    first["cart"] = [1]
    sent = manager.commit(first)
    old, old_replica = sent.send_id, sent.replica
    assert old is not None and old_replica is not None
    rotating = manager.begin(old, replica=old_replica)
    rotating.rotate()
    new = manager.commit(rotating).send_id
    late = manager.begin(old, replica=old_replica)  # both old cookies, within the grace
    assert late["cart"] == [1]
    outcome = manager.commit(late)
    assert outcome.send_id == new and late.id == new
    clock.advance(GRACE + 1)
    after = manager.begin(old, replica=old_replica)  # the tombstone beats the replica
    assert after.get("cart") is None and after.id != old
    manager.commit(after)


def test_a_stateless_rotation_writes_no_pointer(clock: ManualClock) -> None:
    manager = SessionManager(
        replica="only", clock=clock, secret_keys=["rotation-grace-replica-key-0123456789abcdef"]
    )
    first = manager.begin(None)
    first["a"] = 1
    sent = manager.commit(first)
    rotating = manager.begin(sent.send_id, replica=sent.replica)
    rotating.rotate()
    assert manager.commit(rotating).send_id not in (None, sent.send_id)
    view = rotating._handle.view  # type: ignore[attr-defined]  # the request's replica view
    assert view._records and not any(is_pointer(key) for key in view._records)
