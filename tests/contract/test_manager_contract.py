"""Session semantics through the manager, on every store under every policy."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from shoal import (
    ConfigError,
    ConflictError,
    EncodeError,
    ManualClock,
    Policy,
    SessionManager,
    SessionStateError,
)
from shoal.ids import hash_id, is_well_formed
from shoal.stores.base import Change, RecordKey, Store

from .conftest import ManagerFactory

POLICIES = [p.value for p in Policy]
UNLOCKED = ["lossy", "merge", "optimistic"]


@pytest.fixture(params=POLICIES)
def policy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manager(
    managers: ManagerFactory, store: Store, clock: ManualClock, policy: str, app_id: str
) -> Iterator[SessionManager]:
    yield managers(
        store, app_id=app_id, policy=policy, clock=clock, idle_timeout=600, touch_interval=60,
        absolute_timeout=3600, grace=60, lock_timeout=2.0,
    )


def start(manager: SessionManager, **values: object) -> str:
    with manager.open() as session:
        session.update(values)
    return session.id


def test_a_new_session_is_stored_only_when_written(manager: SessionManager) -> None:
    with manager.open() as empty:
        assert empty.is_new
    assert not list(manager.store.records(manager.app_id))
    sid = start(manager, user="ada")
    assert is_well_formed(sid)
    with manager.open(sid) as session:
        assert not session.is_new and session["user"] == "ada"


@pytest.mark.parametrize(
    "client_id", ["", "x", "A" * 43, "../../etc/passwd", "é" * 43, "A" * 4096], ids=repr
)
def test_an_unknown_id_is_never_adopted(manager: SessionManager, client_id: str) -> None:
    with manager.open(client_id) as session:
        session["k"] = 1
    assert session.id != client_id and is_well_formed(session.id)


def test_all_tagged_types_round_trip(manager: SessionManager) -> None:
    value = {
        "when": dt.datetime(2026, 11, 21, 16, 50, tzinfo=dt.timezone.utc),
        "day": dt.date(2026, 1, 2),
        "at": dt.time(12, 30, 1),
        "uid": uuid.UUID(int=7),
        "price": Decimal("12.30"),
        "raw": b"\x00\xff",
        "tags": {"a", "b"},
        "pair": (1, "x"),
        "__t__": "user data that looks like a tag",
    }
    sid = start(manager, value=value)
    with manager.open(sid) as session:
        assert session["value"] == value


def test_an_unencodable_value_fails_at_set_naming_the_key(manager: SessionManager) -> None:
    with manager.open() as session:
        session["fine"] = 1
        with pytest.raises(EncodeError, match="'bad'") as info:
            session["bad"] = object()
        assert info.value.key == "bad" and isinstance(info.value, TypeError)
        assert "bad" not in session
    with manager.open(session.id) as again:
        assert dict(again) == {"fine": 1}


def test_in_place_mutation_is_saved(manager: SessionManager) -> None:
    sid = start(manager, cart=["a"])
    with manager.open(sid) as session:
        session["cart"].append("b")
    with manager.open(sid) as session:
        assert session["cart"] == ["a", "b"]


def test_exception_rolls_back(manager: SessionManager) -> None:
    sid = start(manager, n=1)
    with pytest.raises(ZeroDivisionError), manager.open(sid) as session:
        session["n"] = 2
        1 / 0  # noqa: B018
    with manager.open(sid) as session:
        assert session["n"] == 1


def test_per_key_ttl(manager: SessionManager, clock: ManualClock) -> None:
    with manager.open() as session:
        session.set("auth", {"user": 1}, ttl=100)
        session["cart"] = [1]
    clock.advance(101)
    with manager.open(session.id) as again:
        assert "auth" not in again and again["cart"] == [1]
        again["cart"] = [1, 2]
    stored = manager.store.load(RecordKey(manager.app_id, hash_id(session.id)), now=clock())
    assert stored.record is not None and set(stored.record.fields) == {"cart"}


def test_idle_expiry_and_touch(manager: SessionManager, clock: ManualClock) -> None:
    sid = start(manager, a=1)
    for _ in range(5):
        clock.advance(500)  # below idle_timeout: each read touches
        with manager.open(sid, read_only=True) as session:
            assert session["a"] == 1
    clock.advance(601)
    with manager.open(sid) as session:
        assert session.is_new


def test_absolute_timeout_ends_a_busy_session(manager: SessionManager, clock: ManualClock) -> None:
    sid = start(manager, a=1)
    for _ in range(8):  # 4000 s of activity, past the 3600 s absolute timeout
        clock.advance(500)
        with manager.open(sid) as session:
            alive = not session.is_new
            if alive:
                session["a"] += 1
    assert not alive


def test_rotate_moves_data_to_a_new_id(manager: SessionManager) -> None:
    sid = start(manager, cart=[1])
    with manager.open(sid) as session:
        session.rotate(grace=0)  # as at login; the grace is tests/contract/test_rotation_grace.py
        session["user"] = "ada"
    assert session.id != sid
    with manager.open(session.id) as moved:
        assert dict(moved) == {"cart": [1], "user": "ada"}
    with manager.open(sid) as old:
        assert old.is_new


def test_invalidate_ends_the_session(manager: SessionManager) -> None:
    sid = start(manager, a=1)
    with manager.open(sid) as session:
        session.invalidate()
    with manager.open(sid) as session:
        assert session.is_new and dict(session) == {}


def test_read_only_never_writes(manager: SessionManager) -> None:
    sid = start(manager, a=[1])
    with manager.open(sid, read_only=True) as session:
        session["a"].append(2)  # an in-place edit is not saved either
        with pytest.raises(SessionStateError, match="read_only"):
            session["b"] = 1
    with manager.open(sid) as session:
        assert dict(session) == {"a": [1]}


def test_read_only_takes_no_lock(manager: SessionManager) -> None:
    sid = start(manager, a=1)
    with manager.open(sid, policy="serialized") as writer:
        writer["a"] = 2
        with manager.open(sid, read_only=True) as reader:
            assert reader["a"] == 1


@pytest.mark.parametrize("policy", UNLOCKED)
def test_concurrent_writes_to_different_keys(manager: SessionManager, policy: str) -> None:
    sid = start(manager, a=0, b=0)
    first, second = manager.begin(sid), manager.begin(sid)
    first["a"] = 1
    second["b"] = 1
    manager.commit(first)
    manager.commit(second)
    with manager.open(sid) as session:
        survived = dict(session)
    if policy == "lossy":
        assert survived == {"a": 0, "b": 1}, "lossy: last write wins"
    else:
        assert survived == {"a": 1, "b": 1}


def test_optimistic_conflict_on_a_key_read(manager: SessionManager) -> None:
    sid = start(manager, balance=10, other=0)
    first, second = manager.begin(sid, policy="optimistic"), manager.begin(sid, policy="optimistic")
    first["balance"] -= 3
    second["balance"] -= 5
    manager.commit(first)
    with pytest.raises(ConflictError) as info:
        manager.commit(second)
    assert info.value.keys == ("balance",)
    with manager.open(sid) as session:
        assert session["balance"] == 7


@pytest.mark.parametrize("policy", UNLOCKED)
def test_a_save_never_resurrects_an_invalidated_session(
    manager: SessionManager, policy: str
) -> None:
    sid = start(manager, a=1)
    late = manager.begin(sid)
    late["a"] = 2  # loaded before the logout
    with manager.open(sid) as session:
        session.invalidate()
    outcome = manager.commit(late)
    assert outcome.clear and outcome.send_id is None
    with manager.open(sid) as session:
        assert session.is_new


def test_purge_keeps_live_sessions(manager: SessionManager, clock: ManualClock) -> None:
    dead = start(manager, a=1)
    clock.advance(400)
    live = start(manager, b=1)
    clock.advance(600 + 60 - 399)  # dead is past idle + grace; live is not expired
    assert manager.purge() == 1
    with manager.open(live) as session:
        assert session["b"] == 1
    with manager.open(dead) as session:
        assert session.is_new


def test_touch_interval_must_fit_idle_timeout(store: Store) -> None:
    with pytest.raises(ConfigError, match="at most 50"):
        SessionManager(store, idle_timeout=100, touch_interval=60)


def test_unknown_policy_lists_valid_ones(store: Store) -> None:
    with pytest.raises(ConfigError, match="lossy, merge, optimistic, serialized"):
        SessionManager(store, policy="pessimistic")


def test_a_corrupt_field_is_skipped_not_fatal(
    manager: SessionManager, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    sid = start(manager, good=1)
    key = RecordKey(manager.app_id, hash_id(sid))
    loaded = manager.store.load(key, now=clock())
    assert loaded.record is not None
    for bad in (
        b"?garbage",
        b'j{"__t__": "nope", "v": 1}',
        b"j{not json",
        b'j{"__t__": "decimal", "v": "abc"}',  # decimal.InvalidOperation, not a ValueError
        b"x\x00",  # an expiry frame cut short
    ):
        manager.store.apply(key, Change(600, set={"bad": bad}), now=clock())
        with caplog.at_level("WARNING", logger="shoal"), manager.open(sid) as session:
            assert dict(session) == {"good": 1}
        assert "'bad' cannot be decoded" in caplog.text


def test_a_corrupt_field_the_request_never_reads_is_kept_by_a_save(
    manager: SessionManager, clock: ManualClock
) -> None:
    """Values decode on first use: a save of other keys keeps the bytes it cannot read."""
    sid = start(manager, good=1)
    key = RecordKey(manager.app_id, hash_id(sid))
    manager.store.apply(key, Change(600, set={"bad": b"j{not json"}), now=clock())
    with manager.open(sid) as session:
        session["good"] += 1  # no iteration, no access to "bad"
    loaded = manager.store.load(key, now=clock())
    assert loaded.record is not None
    assert loaded.record.fields["bad"] == b"j{not json"
    with manager.open(sid) as session:
        assert "bad" not in session and session.get("bad") is None
        assert dict(session) == {"good": 2}


def test_a_key_that_is_not_utf8_fails_at_set(manager: SessionManager) -> None:
    with manager.open() as session:
        with pytest.raises(EncodeError) as info:
            session["\ud800"] = 1
        assert info.value.key == "\ud800"
        session["ok"] = 1
    with manager.open(session.id) as again:
        assert dict(again) == {"ok": 1}
