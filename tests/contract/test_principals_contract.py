"""Sessions by principal (``session.principal``, ``sessions_of``, ``invalidate_all``,
``max_sessions_per_principal``) on every store under every policy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shoal import ConfigError, ManualClock, Policy, SessionManager
from shoal.ids import hash_id
from shoal.principals import index_app_id
from shoal.stores.base import LoadStatus, RecordKey, Store

from .conftest import ManagerFactory

POLICIES = [p.value for p in Policy]
SECRET = "principals-test-key-" + "0123456789abcdef" * 2


@pytest.fixture(params=POLICIES)
def policy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _manager(
    make: ManagerFactory,
    store: Store,
    clock: ManualClock,
    policy: str,
    app_id: str,
    **options: object,
) -> SessionManager:
    return make(
        store, app_id=app_id, policy=policy, clock=clock, idle_timeout=600, touch_interval=60,
        absolute_timeout=3600, grace=60, lock_timeout=2.0, **options,
    )  # fmt: skip


@pytest.fixture
def manager(
    managers: ManagerFactory, store: Store, clock: ManualClock, policy: str, app_id: str
) -> Iterator[SessionManager]:
    yield _manager(managers, store, clock, policy, app_id)


def login(manager: SessionManager, user: str | int, session_id: str | None = None) -> str:
    with manager.open(session_id) as session:
        session["cart"] = ["book"]
        session.principal = user
    return session.id


def state(manager: SessionManager, session_id: str) -> LoadStatus:
    key = RecordKey(manager.app_id, hash_id(session_id))
    return manager.store.load(key, now=manager.clock()).status


def hashes(manager: SessionManager, user: str | int) -> set[str]:
    return {info.key.id_hash for info in manager.sessions_of(user)}


def index_entries(manager: SessionManager) -> int:
    """Entries in every index record of the manager's app (what the index holds)."""
    total = 0
    for info in manager.store.records(index_app_id(manager.app_id)):
        record = manager.store.load(info.key, now=manager.clock()).record
        total += len(record.fields) if record is not None else 0
    return total


def test_setting_the_principal_rotates_and_ends_the_pre_login_id(
    manager: SessionManager,
) -> None:
    with manager.open() as anonymous:
        anonymous["cart"] = ["book"]
    before = anonymous.id
    after = login(manager, "ada", before)
    assert after != before
    assert state(manager, before) is LoadStatus.INVALIDATED
    with manager.open(before) as again:
        assert again.is_new and again.principal is None  # the anonymous id is not usable
    with manager.open(after) as session:
        assert session.principal == "ada" and session["cart"] == ["book"]
        assert "_shoal.principal" not in session  # shoal's own key stays hidden


def test_sessions_of_lists_every_live_session_of_one_user(
    manager: SessionManager, clock: ManualClock
) -> None:
    phone = login(manager, "ada")
    clock.advance(1)
    laptop = login(manager, "ada")
    other = login(manager, "bob")
    infos = manager.sessions_of("ada")
    assert [i.key.id_hash for i in infos] == [hash_id(phone), hash_id(laptop)]  # oldest first
    assert all(i.key.app_id == manager.app_id and not i.invalidated for i in infos)
    assert hashes(manager, "bob") == {hash_id(other)}
    assert manager.sessions_of("nobody") == []


def test_an_int_principal_is_its_decimal_string(manager: SessionManager) -> None:
    sid = login(manager, 42)
    with manager.open(sid) as session:
        assert session.principal == "42"
    assert hashes(manager, 42) == hashes(manager, "42") == {hash_id(sid)}


def test_invalidate_all_ends_every_session_of_the_user_only(
    manager: SessionManager, clock: ManualClock
) -> None:
    ada = [login(manager, "ada") for _ in range(3)]
    bob = login(manager, "bob")
    assert manager.invalidate_all("ada") == 3
    for sid in ada:
        assert state(manager, sid) is LoadStatus.INVALIDATED  # a tombstone: nothing revives it
        with manager.open(sid) as session:
            assert session.is_new and "cart" not in session
    assert manager.sessions_of("ada") == []
    assert hashes(manager, "bob") == {hash_id(bob)}
    assert manager.invalidate_all("ada") == 0


def test_a_rotated_session_stays_indexed_under_its_new_id(manager: SessionManager) -> None:
    old = login(manager, "ada")
    with manager.open(old) as session:
        session.rotate()
    assert session.id != old
    assert hashes(manager, "ada") == {hash_id(session.id)}
    assert manager.invalidate_all("ada") == 1
    assert state(manager, session.id) is LoadStatus.INVALIDATED
    with manager.open(old) as again:  # within the rotation grace: leads to an ended session
        assert again.is_new and "cart" not in again


def test_clearing_the_principal_rotates_and_unlists(manager: SessionManager) -> None:
    old = login(manager, "ada")
    with manager.open(old) as session:
        session.principal = None
        assert session.principal is None
    assert session.id != old and state(manager, old) is LoadStatus.INVALIDATED
    assert manager.sessions_of("ada") == []
    with manager.open(session.id) as kept:
        assert kept["cart"] == ["book"] and kept.principal is None


def test_logout_then_login_in_one_request_indexes_the_fresh_session(
    manager: SessionManager,
) -> None:
    old = login(manager, "ada")
    with manager.open(old) as session:
        session.invalidate()
        session.principal = "bob"
    assert hashes(manager, "ada") == set()
    assert hashes(manager, "bob") == {hash_id(session.id)}


def test_max_sessions_per_principal_ends_the_oldest(
    managers: ManagerFactory, store: Store, clock: ManualClock, policy: str, app_id: str
) -> None:
    manager = _manager(managers, store, clock, policy, app_id, max_sessions_per_principal=2)
    first = login(manager, "ada")
    clock.advance(1)
    second = login(manager, "ada")
    clock.advance(1)
    third = login(manager, "ada")
    assert state(manager, first) is LoadStatus.INVALIDATED
    assert hashes(manager, "ada") == {hash_id(second), hash_id(third)}
    login(manager, "bob")  # another user's sessions do not count
    assert state(manager, second) is LoadStatus.LOADED


def test_the_index_drops_dead_ids_and_stays_bounded(
    manager: SessionManager, clock: ManualClock
) -> None:
    for _ in range(40):  # well past the prune threshold: the index never holds them all
        sid = login(manager, "ada")
        with manager.open(sid) as session:
            session.invalidate()  # a plain logout: the index learns it when it meets it
    assert index_entries(manager) <= 17
    assert manager.sessions_of("ada") == []
    assert index_entries(manager) == 0
    live = login(manager, "ada")
    clock.advance(601)  # idle expiry: dead without anyone telling the index
    assert manager.sessions_of("ada") == []
    assert index_entries(manager) == 0
    assert state(manager, live) is LoadStatus.EXPIRED


def test_index_records_stay_out_of_the_apps_records(manager: SessionManager) -> None:
    sid = login(manager, "ada")
    assert [i.key.id_hash for i in manager.store.records(manager.app_id)] == [hash_id(sid)]
    assert all(i.key.app_id == manager.app_id for i in manager.store.records(manager.app_id))
    assert len(list(manager.store.records(index_app_id(manager.app_id)))) == 1


def test_an_ended_session_is_not_restored_from_its_replica(
    managers: ManagerFactory, store: Store, clock: ManualClock, policy: str, app_id: str
) -> None:
    manager = _manager(
        managers, store, clock, policy, app_id, replica=True, secret_keys=[SECRET]
    )
    session = manager.begin()
    session["cart"] = ["book"]
    session.principal = "ada"
    outcome = manager.commit(session)
    assert outcome.replica is not None and outcome.send_id is not None
    assert manager.invalidate_all("ada") == 1
    again = manager.begin(outcome.send_id, replica=outcome.replica)
    assert again.is_new and "cart" not in again
    manager.rollback(again)


def test_a_principal_must_be_a_string_or_an_int(manager: SessionManager) -> None:
    with manager.open() as session:
        with pytest.raises(TypeError):
            session.principal = 1.5  # type: ignore[assignment]
        with pytest.raises(ValueError):
            session.principal = ""
    with pytest.raises(TypeError):
        manager.sessions_of(None)  # type: ignore[arg-type]


def test_max_sessions_per_principal_is_checked(store: Store, app_id: str) -> None:
    with pytest.raises(ConfigError, match="max_sessions_per_principal"):
        SessionManager(store, app_id=app_id, max_sessions_per_principal=0)


def test_stateless_sessions_have_no_index(app_id: str) -> None:
    manager = SessionManager(app_id=app_id, replica="only", secret_keys=[SECRET])
    with pytest.raises(ConfigError, match="need a store"):
        manager.sessions_of("ada")
