"""Listeners in one process: which events fire, what they carry, and that a raising one is harmless."""

from __future__ import annotations

import logging

import pytest

from shoal import ConfigError, ConflictError, LockTimeout, ManualClock, SessionManager
from shoal.cluster import Event
from shoal.ids import hash_id, session_ref
from shoal.stores.memory import MemoryStore


def _manager(clock: ManualClock | None = None, **options: object) -> SessionManager:
    return SessionManager(MemoryStore(), node_id="n1", clock=clock, **options)  # type: ignore[arg-type]


def test_each_kind_of_event_reaches_its_listener() -> None:
    manager = _manager(policy="optimistic")
    seen: list[Event] = []
    manager.add_listener(seen.append)
    with manager.open() as session:
        session["n"] = 1
    with manager.open(session.id) as rotated:
        rotated.rotate()
    first, second = manager.begin(rotated.id), manager.begin(rotated.id)
    first["n"], second["n"] = 2, 3
    manager.commit(first)
    with pytest.raises(ConflictError):
        manager.commit(second)
    with pytest.raises(ZeroDivisionError), manager.open(rotated.id) as failing:
        failing["n"] = 4
        1 / 0  # noqa: B018
    with manager.open(rotated.id) as ending:
        ending.invalidate()
    names = [e.event for e in seen]
    assert names == ["created", "rotated", "conflict", "rollback", "invalidated"]
    assert seen[0].ref == session_ref(hash_id(session.id))
    assert seen[1].detail == {"new_ref": session_ref(hash_id(rotated.id))}
    assert seen[2].detail == {"keys": ["n"]}
    assert {e.node_id for e in seen} == {"n1"} and all(e.local for e in seen)
    assert all(session.id not in repr(e) for e in seen)


def test_lock_timeout_is_an_event() -> None:
    manager = _manager(policy="serialized", lock_timeout=0)
    seen: list[Event] = []
    manager.add_listener(seen.append, ["lock_timeout"])
    with manager.open() as session:
        session["n"] = 1
    holder = manager.begin(session.id, lazy=False)
    with pytest.raises(LockTimeout), manager.open(session.id):
        pass
    manager.rollback(holder)
    assert [e.event for e in seen] == ["lock_timeout"]


def test_values_are_given_only_to_listeners_that_ask() -> None:
    manager = _manager()
    plain: list[Event] = []
    with_values: list[Event] = []
    manager.add_listener(plain.append, ["invalidated"])

    @manager.listener("invalidated", values=True)
    def keep(event: Event) -> None:
        with_values.append(event)

    with manager.open() as session:
        session["files"] = ["/tmp/a"]
        session.set("_note", "x")
    with manager.open(session.id) as ending:
        ending["files"] = ["/tmp/changed-in-the-logout-request"]
        ending.invalidate()
    assert plain[0].values is None
    assert with_values[0].values == {"files": ["/tmp/a"], "_note": "x"}


def test_logout_everywhere_gives_each_ended_session_its_values() -> None:
    """The Web-SIG listener must see the files of sessions ended by ``invalidate_all`` too."""
    manager = _manager()
    ended: list[Event] = []
    manager.add_listener(ended.append, ["invalidated"], values=True)
    for device in ("phone", "laptop"):
        with manager.open() as session:
            session.principal = "ann"
            session["files"] = [f"/tmp/{device}"]
    assert manager.invalidate_all("ann") == 2
    assert sorted(e.values["files"][0] for e in ended if e.values) == ["/tmp/laptop", "/tmp/phone"]
    assert {e.principal for e in ended} == {"ann"}


def test_expired_by_purge_carries_the_values_read_in_the_same_step() -> None:
    clock = ManualClock(start=1000.0)
    manager = _manager(clock, idle_timeout=60, absolute_timeout=65, touch_interval=30, grace=10)
    ended: list[Event] = []
    manager.add_listener(ended.append, ["expired"], values=True)
    with manager.open() as session:
        session["files"] = ["/tmp/b"]
    with manager.open() as other:
        other["x"] = 1
    with manager.open(other.id) as logout:
        logout.invalidate()  # a tombstone: purged too, but announced at logout already
    clock.advance(65 + 10 + 1)  # past the tombstone's absolute expiry and grace too
    assert manager.purge() == 2
    assert [(e.event, e.values) for e in ended] == [("expired", {"files": ["/tmp/b"]})]


def test_a_listener_that_raises_is_logged_and_the_request_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = _manager()
    after: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    manager.add_listener(broken)
    manager.add_listener(lambda e: after.append(e.event))
    with caplog.at_level(logging.ERROR, logger="shoal.cluster"), manager.open() as session:
        session["n"] = 1
    with manager.open(session.id, read_only=True) as again:
        assert again["n"] == 1  # the save happened
    assert after == ["created"]
    assert "listener" in caplog.text and "broken" in caplog.text
    assert session.id not in caplog.text


@pytest.mark.parametrize(
    ("events", "values"),
    [
        pytest.param(["created", "nope"], False, id="unknown-event"),
        pytest.param("created", False, id="a-string-not-a-list"),
        pytest.param(["created"], True, id="values-without-an-ending-event"),
    ],
)
def test_bad_listener_registrations_are_config_errors(events: object, values: bool) -> None:
    with pytest.raises(ConfigError):
        _manager().add_listener(lambda e: None, events, values=values)  # type: ignore[arg-type]


def test_no_listener_no_channel_means_no_event_work() -> None:
    manager = _manager()
    assert not manager.events.active
    with manager.open() as session:
        session["n"] = 1
    assert manager.events.sent == 0


def test_the_default_node_id_is_per_process_and_in_lock_tokens() -> None:
    import os
    import socket

    one, two = SessionManager(MemoryStore()), SessionManager(MemoryStore())
    assert one.node_id == two.node_id
    host, pid, suffix = one.node_id.rsplit("-", 2)
    assert pid == str(os.getpid()) and len(suffix) == 4
    assert host.split("-")[0] in socket.gethostname()
    store = MemoryStore()
    manager = SessionManager(store, node_id="web-7", policy="serialized")
    with manager.open() as session:
        session["n"] = 1
    held = manager.begin(session.id, lazy=False)
    try:
        record = store._records[next(iter(store._records))]
        assert record.lease_token is not None and record.lease_token.startswith("web-7:")
    finally:
        manager.rollback(held)


def test_the_cluster_package_pins_its_public_names() -> None:
    import shoal.cluster

    assert sorted(shoal.cluster.__all__) == [
        "EVENTS", "Event", "Hub", "Listener", "NearCache", "default_node_id",
    ]  # fmt: skip
    assert shoal.cluster.EVENTS == {
        "created", "rotated", "invalidated", "expired", "restored",
        "conflict", "lock_timeout", "rollback",
    }  # fmt: skip


def test_purge_announces_neither_rotation_pointers_nor_tombstones() -> None:
    clock = ManualClock(start=1000.0)
    manager = _manager(
        clock, idle_timeout=60, absolute_timeout=65, touch_interval=30, grace=10,
        rotation_grace=30,
    )  # fmt: skip
    ended: list[Event] = []
    manager.add_listener(ended.append, ["expired"])
    with manager.open() as session:
        session["n"] = 1
    with manager.open(session.id) as rotating:
        rotating.rotate()  # a tombstone and a pointer for the old id
    clock.advance(65 + 10 + 1)
    assert manager.purge() >= 2
    assert [e.ref for e in ended] == [session_ref(hash_id(rotating.id))]


def test_a_node_that_only_sends_runs_no_listener_thread(tmp_path: object) -> None:
    import threading
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    url = f"sqlite://{tmp_path / 's.db'}"
    before = {t.name for t in threading.enumerate()}
    sender = SessionManager(url, node_id="sender", events=True)
    try:
        with sender.open() as session:
            session["n"] = 1
        assert sender.events.sent == 1
        started = {t.name for t in threading.enumerate()} - before
        assert not any(name.startswith("shoal-events") for name in started)
        sender.add_listener(lambda e: None)
        started = {t.name for t in threading.enumerate()} - before
        assert any(name.startswith("shoal-events") for name in started)
    finally:
        sender.close()


def test_a_logout_of_a_signed_in_session_names_its_principal() -> None:
    """``invalidate()`` clears the session, principal included: the event still
    says whose session ended (issue 12: events carry the principal when set),
    as ``invalidate_all`` does."""
    manager = _manager()
    ended: list[Event] = []
    manager.add_listener(ended.append, ["invalidated"])
    with manager.open() as session:
        session.principal = "ann"
    with manager.open(session.id) as again:
        again.invalidate()
    with manager.open() as anonymous:
        anonymous["n"] = 1
    with manager.open(anonymous.id) as again:
        again.invalidate()
    assert [e.principal for e in ended] == ["ann", None]


def test_an_expired_signed_in_session_names_its_principal() -> None:
    """Purge reads what it deletes: the ``expired`` event names whose session it was."""
    clock = ManualClock(start=1_000_000.0)
    manager = _manager(clock, idle_timeout=60, touch_interval=30, grace=10)
    ended: list[Event] = []
    manager.add_listener(ended.append, ["expired"])
    with manager.open() as session:
        session.principal = "ann"
    with manager.open() as anonymous:
        anonymous["n"] = 1
    clock.advance(60 + 10 + 1)
    manager.purge()
    assert sorted(e.principal or "-" for e in ended) == ["-", "ann"]
