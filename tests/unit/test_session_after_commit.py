"""A session's life through the manager: readable to the end, writes only while open.

After its commit the session is a read-only snapshot of what was saved;
after ``invalidate()`` writes go to a fresh session; shoal's own keys
(flashes, tokens) never show in the mapping view. Store-independent rules,
so memory and SQLite are enough.
"""

from __future__ import annotations


import pytest

from shoal import EncodeError, ManualClock, Policy, SessionManager, SessionStateError
from shoal.ids import is_well_formed
from shoal.stores.base import Store

from tests._counting import CountingStore




@pytest.fixture
def store(local_store: Store) -> Store:
    return local_store


@pytest.fixture(params=[p.value for p in Policy])
def policy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manager(store: Store, clock: ManualClock, app_id: str, policy: str) -> SessionManager:
    return SessionManager(store, app_id=app_id, clock=clock, policy=policy, lock_timeout=0.2)


def start(manager: SessionManager, **values: object) -> str:
    with manager.open() as session:
        session.update(values)
    return session.id


# -- readable until the end --------------------------------------------------------


def test_after_the_with_block_the_session_reads_as_committed(manager: SessionManager) -> None:
    sid = start(manager, n=1, cart=["a"])
    with manager.open(sid) as session:
        session["n"] += 1
        session["cart"].append("b")
        del session["cart"]
        session["note"] = "x"
    assert session["n"] == 2 and session.get("cart") is None and "note" in session
    assert dict(session) == {"n": 2, "note": "x"} and len(session) == 2
    assert session.id == sid and session.expires > 0 and not session.is_new


def test_a_write_after_the_with_block_is_refused_and_not_saved(manager: SessionManager) -> None:
    sid = start(manager, n=1)
    with manager.open(sid) as session:
        session["n"] = 2
    for write in (
        lambda: session.__setitem__("n", 3),
        lambda: session.set("m", 1, ttl=10),
        lambda: session.__delitem__("n"),
        lambda: session.pop("n"),
        lambda: session.flash("hi"),
        session.rotate,
        session.invalidate,
    ):
        with pytest.raises(SessionStateError, match="with .*block.*not saved"):
            write()
    assert session["n"] == 2, "the refused write did not change the snapshot either"
    with manager.open(sid) as again:
        assert dict(again) == {"n": 2}


def test_an_unloaded_session_read_after_commit_loads_read_only(
    store: Store, clock: ManualClock, app_id: str, policy: str
) -> None:
    """No lease, no touch, no write: the response that could carry a cookie is gone."""
    manager = SessionManager(store, app_id=app_id, clock=clock, policy=policy)
    sid = start(manager, n=1)
    counting = CountingStore(store)
    reader = SessionManager(counting, app_id=app_id, clock=clock, policy=policy)
    clock.advance(120)  # past the touch interval: a normal load would touch
    session = reader.begin(sid)
    outcome = reader.commit(session)
    assert outcome.send_id is None and not outcome.clear and counting.calls == []
    assert session["n"] == 1 and session.id == sid
    [name], [kwargs] = counting.calls, counting.call_kwargs
    assert name == "load" and kwargs.get("touch") is None and kwargs.get("lock") is None
    with pytest.raises(SessionStateError, match="committed"):
        session["n"] = 2
    [info] = store.records(app_id)
    assert info.accessed < clock() and info.locked_until is None, "no touch, no lease"


def test_readme_login_example(manager: SessionManager, clock: ManualClock) -> None:
    session_id = start(manager, cart=[1])
    with manager.open(session_id) as session:  # load; commit on success
        session.set("auth", {"user": 42}, ttl=900)  # this key alone expires in 15 min
        session.rotate(grace=0)  # new id at login; the old one dies now
    assert is_well_formed(session.id) and session.id != session_id
    assert session["auth"] == {"user": 42} and session["cart"] == [1]
    with manager.open(session.id) as after:
        assert not after.is_new and after["auth"] == {"user": 42}
    with manager.open(session_id) as old:
        assert old.is_new, "the pre-login id was retired"
    clock.advance(901)
    with manager.open(session.id) as later:
        assert "auth" not in later and later["cart"] == [1]


def test_a_rolled_back_session_reads_as_loaded(manager: SessionManager) -> None:
    sid = start(manager, n=1, cart=["a"])
    with pytest.raises(ZeroDivisionError), manager.open(sid) as session:
        session["n"] = 2
        session["cart"].append("b")
        session["new"] = True
        raise ZeroDivisionError
    assert dict(session) == {"n": 1, "cart": ["a"]}, "the dropped changes are gone"
    with pytest.raises(SessionStateError, match="rolled back"):
        session["n"] = 3
    invalidated = manager.begin(sid)
    invalidated.invalidate()
    invalidated["fresh"] = 1
    manager.rollback(invalidated)
    assert dict(invalidated) == {"n": 1, "cart": ["a"]} and invalidated.id == sid


# -- writes after invalidate -------------------------------------------------------


def test_writes_after_invalidate_go_to_a_fresh_session(manager: SessionManager) -> None:
    sid = start(manager, user="ada")
    with manager.open(sid) as session:
        session.invalidate()
        assert "user" not in session and dict(session) == {}
        session.flash("You have been logged out")
    fresh = session.id
    assert is_well_formed(fresh) and fresh != sid and session.invalidated
    with manager.open(sid) as old:
        assert old.is_new and dict(old) == {}, "the old id stays dead"
    with manager.open(fresh) as later:
        assert not later.is_new and "user" not in later
        assert [f.message for f in later.pop_flashes()] == ["You have been logged out"]


def test_invalidate_without_later_writes_stores_nothing(manager: SessionManager) -> None:
    sid = start(manager, user="ada")
    session = manager.begin(sid)
    session.invalidate()
    assert manager.commit(session).clear
    live = [r for r in manager.store.records(manager.app_id) if not r.invalidated]
    assert live == []


# -- shoal's own keys ------------------------------------------------------------


def test_internal_keys_stay_out_of_the_mapping(manager: SessionManager) -> None:
    sid = start(manager, a=1)
    with manager.open(sid) as session:
        session.flash("saved")
        session.issue_token("buy")
        assert dict(session) == {"a": 1} and len(session) == 1 and list(session.keys()) == ["a"]
    with manager.open(sid) as later:
        assert dict(later) == {"a": 1} and len(later) == 1
        flash_keys = [k for k in later._encoded_fields() if k.startswith("_shoal.flash.")]
        [key] = flash_keys
        assert key not in later and later.get(key) is None
        with pytest.raises(KeyError):
            later[key]
        with pytest.raises(KeyError):
            del later[key]
        with pytest.raises(ValueError, match="reserved"):
            later[key] = "forged"
        assert [f.message for f in later.pop_flashes()] == ["saved"]


def test_flash_takes_markup_and_names_the_call_on_failure(manager: SessionManager) -> None:
    markupsafe = pytest.importorskip("markupsafe")
    sid = start(manager, a=1)
    with manager.open(sid) as session:
        session.flash(markupsafe.Markup("<b>saved</b>"), "success")
        with pytest.raises(EncodeError, match=r"^flash message cannot be stored") as info:
            session.flash(object())
        assert "_shoal" not in str(info.value)
    with manager.open(sid) as later:
        [flash] = later.pop_flashes()
    assert flash.category == "success" and flash.message == "<b>saved</b>"
    assert type(flash.message) is str, "a str subclass comes back as a plain str"


def test_a_value_set_then_changed_in_place_is_saved_as_changed(manager: SessionManager) -> None:
    with manager.open() as session:
        session.setdefault("cart", []).append("apple")
        session.set("seen", {"pages": 1}, ttl=60)
        session["seen"]["pages"] += 1
    with manager.open(session.id, read_only=True) as reread:
        assert reread["cart"] == ["apple"]
        assert reread["seen"] == {"pages": 2}
