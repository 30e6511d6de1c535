"""What sessions by user cost in store calls (a ``CountingStore`` over memory).

Pins the round trips a login, ``sessions_of`` and ``invalidate_all`` make, so
a change that adds one to every login shows up here.
"""

from __future__ import annotations

from shoal import ManualClock, SessionManager
from shoal.stores.memory import MemoryStore

from .._counting import CountingStore


def manager_on(store: CountingStore, **options: object) -> SessionManager:
    return SessionManager(store, clock=ManualClock(), **options)  # type: ignore[arg-type]


def login(manager: SessionManager, session_id: str | None = None) -> str:
    with manager.open(session_id) as session:
        session["cart"] = ["book"]
        session.principal = "ada"
    return session.id


def test_a_login_costs_one_index_write_and_two_index_reads() -> None:
    store = CountingStore(MemoryStore())
    manager = manager_on(store)
    with manager.open() as session:
        session["cart"] = []
    anonymous = session.id
    store.calls.clear()
    login(manager, anonymous)
    # load the anonymous session; create the new id; re-read the old one (merge's
    # catch-up of writes made meanwhile); tombstone it; then the index: its write
    # (apply, or create on the window's first login) and a read of the two
    # windows a live session can be in
    assert store.calls == [
        "load", "create", "load", "invalidate", "apply", "create", "load", "load",
    ]
    store.calls.clear()
    login(manager, None)  # the window's record exists now: one apply
    assert store.calls == ["create", "apply", "load", "load"]


def test_sessions_of_and_invalidate_all_read_two_windows_and_each_session() -> None:
    store = CountingStore(MemoryStore())
    manager = manager_on(store)
    for _ in range(3):
        login(manager)
    store.calls.clear()
    assert len(manager.sessions_of("ada")) == 3
    assert store.calls == ["load", "load", "load", "load", "load"]
    store.calls.clear()
    assert manager.invalidate_all("ada") == 3
    assert store.calls.count("invalidate") == 3
    assert store.calls.count("apply") == 1  # the index entries, dropped in one write
    assert len(store.calls) == 5 + 3 + 2 + 1  # listing, endings, re-read, one write


def test_a_plain_save_of_a_signed_in_session_touches_no_index() -> None:
    store = CountingStore(MemoryStore())
    manager = manager_on(store)
    sid = login(manager)
    store.calls.clear()
    with manager.open(sid) as session:
        session["cart"] = ["book", "pen"]
    assert store.calls == ["load", "apply"]
