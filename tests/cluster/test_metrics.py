"""Prometheus metrics: every counter moves when its thing happens, and the WSGI exposition shows them."""

from __future__ import annotations

import pytest

from shoal import ConflictError, LockTimeout, SessionManager, StoreUnavailable
from shoal.cluster import events as ev
from shoal.cluster.events import Event
from shoal.stores.memory import MemoryStore

prometheus_client = pytest.importorskip("prometheus_client", reason="the shoal[metrics] extra")


def _value(name: str, app_id: str, **labels: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(name, {"app_id": app_id, **labels})
    return 0.0 if value is None else value


def test_loads_saves_conflicts_and_latency(app_id: str) -> None:
    manager = SessionManager(MemoryStore(), app_id=app_id, policy="optimistic", metrics=True)
    with manager.open() as session:
        session["n"] = 1
    one, two = manager.begin(session.id), manager.begin(session.id)
    one["n"], two["n"] = 2, 3
    manager.commit(one)
    with pytest.raises(ConflictError):
        manager.commit(two)
    assert _value("shoal_saves_total", app_id) == 2  # the create and one save
    assert _value("shoal_loads_total", app_id, status="loaded") == 2
    assert _value("shoal_conflicts_total", app_id) == 1
    assert _value("shoal_operation_seconds_count", app_id, operation="load") == 2
    assert _value("shoal_operation_seconds_count", app_id, operation="create") == 1


def test_lock_waits_and_timeouts(app_id: str) -> None:
    manager = SessionManager(
        MemoryStore(), app_id=app_id, policy="serialized", lock_timeout=0.05, metrics=True
    )
    with manager.open() as session:
        session["n"] = 1
    holder = manager.begin(session.id, lazy=False)
    with pytest.raises(LockTimeout), manager.open(session.id):
        pass
    manager.rollback(holder)
    assert _value("shoal_lock_waits_total", app_id) == 1
    assert _value("shoal_lock_timeouts_total", app_id) == 1
    assert _value("shoal_lock_wait_seconds_total", app_id) > 0


def test_store_errors_are_counted(app_id: str) -> None:
    pytest.importorskip("redis", reason="the shoal[redis] extra")
    manager = SessionManager(
        "redis://127.0.0.1:1/0?socket_timeout=0.2", app_id=app_id, metrics=True
    )
    with pytest.raises(StoreUnavailable), manager.open("x" * 43):
        pass
    assert _value("shoal_store_errors_total", app_id, operation="load") == 1


def test_events_sent_received_and_missed(app_id: str) -> None:
    store = MemoryStore()
    sender = SessionManager(store, app_id=app_id, node_id="s", events=True, metrics=True)
    receiver = SessionManager(store, app_id=app_id, node_id="r", events=True, metrics=True)
    receiver.add_listener(lambda e: None)  # a node listens once something listens
    with sender.open() as session:
        session["n"] = 1
    assert _value("shoal_events_sent_total", app_id, event="created") == 1
    assert _value("shoal_events_received_total", app_id, event="created") == 1
    # Node "x" sends its events 1 and 5: 3 never arrived.
    for seq in (1, 5):
        raw = Event("created", app_id, "x", 0.0, "0" * 12, detail={"seq": seq})
        receiver.events._deliver(ev.encode(raw))
    assert _value("shoal_events_missed_total", app_id) == 3
    assert receiver.events.missed == 3


def test_the_wsgi_exposition_shows_them(app_id: str) -> None:
    manager = SessionManager(MemoryStore(), app_id=app_id, metrics=True)
    with manager.open() as session:
        session["n"] = 1
    app = prometheus_client.make_wsgi_app()
    status: list[str] = []
    body = b"".join(
        app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""},
            lambda s, h: status.append(s))
    )  # fmt: skip
    assert status == ["200 OK"]
    assert f'shoal_saves_total{{app_id="{app_id}"}} 1.0'.encode() in body


def test_restored_from_a_replica_is_counted_and_an_event(app_id: str) -> None:
    store = MemoryStore()
    manager = SessionManager(
        store, app_id=app_id, replica=True, secret_keys=["pQ3v9XkL2mZr8TfW1yBn6HsD4gJc7Ue0"], metrics=True
    )
    seen: list[str] = []
    manager.add_listener(lambda e: seen.append(e.event), ["restored"])
    session = manager.begin(None, lazy=False)
    session["n"] = 1
    outcome = manager.commit(session)
    store._records.clear()  # the store lost everything
    again = manager.begin(outcome.send_id, replica=outcome.replica, lazy=False)
    assert again["n"] == 1
    manager.commit(again)
    assert _value("shoal_replica_restores_total", app_id) == 1
    assert seen == ["restored"]
