"""The listener thread reconnects by itself after the store restarts, and counts what it missed;
on SQLite, what was pruned from the events table before it read it."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from shoal import SessionManager
from shoal.cluster import Event
from shoal.cluster._sqlite_channel import SQLiteChannel
from shoal.cluster.hub import Hub
from shoal.codec import JsonCodec
from shoal.ids import session_ref
from shoal.stores import open_store
from tests.conftest import STORE_KINDS

DEADLINE = 60.0


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
def test_the_listener_comes_back_after_a_restart_and_logs_the_missed_events(
    kind: str, request: pytest.FixtureRequest, tmp_path: object, app_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    url = STORE_KINDS[kind](request, tmp_path)  # type: ignore[arg-type]
    server = request.getfixturevalue("redis_server" if kind == "redis" else "postgres_server")
    heard: list[Event] = []
    arrived = threading.Event()

    def listen(event: Event) -> None:
        heard.append(event)
        arrived.set()

    receiver = SessionManager(url, app_id=app_id, node_id="receiver", events=True)
    sender = SessionManager(url, app_id=app_id, node_id="sender", events=True)
    receiver.add_listener(listen, ["created"])
    raised: list[Event] = []
    sender.add_listener(raised.append, ["created"])  # every event the sender numbered
    try:
        with sender.open() as first:
            first["n"] = 0
        assert arrived.wait(DEADLINE) and len(heard) == 1
        with caplog.at_level(logging.INFO, logger="shoal.cluster"):
            server.restart()
            arrived.clear()
            # Sessions are created until one is heard again: those sent before
            # the listener re-subscribed are missed.
            deadline = time.monotonic() + DEADLINE
            while not arrived.wait(0.2) and time.monotonic() < deadline:
                try:
                    with sender.open() as more:
                        more["n"] = 1
                except Exception:  # noqa: BLE001 - the store is still coming back
                    continue
            assert arrived.is_set(), "the listener never came back"
            arrived.clear()
            with sender.open() as last:  # heard last: every earlier number is accounted for
                last["n"] = 2
            assert arrived.wait(DEADLINE)
        assert "events channel" in caplog.text and "lost" in caplog.text
        assert receiver.events.received + receiver.events.missed == len(raised)
        if receiver.events.missed:
            assert f"missed {receiver.events.missed} event(s) from node sender" in caplog.text
    finally:
        sender.close()
        receiver.close()


def _hub(path: str, app_id: str, node_id: str) -> Hub:
    """A node's hub on the SQLite file at ``path``, its events table kept to 10 rows."""
    return Hub(
        app_id=app_id, node_id=node_id, store=open_store(f"sqlite://{path}"), codec=JsonCodec(),
        clock=time.time, events=True, channel=SQLiteChannel(path, app_id, retention=10),
    )  # fmt: skip


def test_a_sqlite_listener_that_fell_behind_the_kept_events_logs_exactly_what_it_missed(
    tmp_path: object, app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The receiver's listener is held inside the first event while the sender
    raises far more than the table keeps (each sender prunes what it wrote past
    ``retention``): the pruned ones are missed, counted exactly from the
    sender's numbers, and logged."""
    path = f"{tmp_path}/sessions.db"
    receiver, sender = _hub(path, app_id, "receiver"), _hub(path, app_id, "sender")
    inside, release, last_heard = threading.Event(), threading.Event(), threading.Event()
    heard: list[Event] = []
    sent = [f"{n:04x}".ljust(64, "0") for n in range(1, 203)]  # distinct refs (12 hex)

    def listen(event: Event) -> None:
        heard.append(event)
        inside.set()
        if len(heard) == 1:
            release.wait(DEADLINE)  # the listener thread falls behind here
        if event.ref == session_ref(sent[-1]):
            last_heard.set()

    receiver.add_listener(listen, ["created"])
    try:
        with caplog.at_level(logging.WARNING, logger="shoal.cluster"):
            sender.emit("created", sent[0])
            assert inside.wait(DEADLINE)
            for id_hash in sent[1:-1]:
                sender.emit("created", id_hash)
            release.set()
            sender.emit("created", sent[-1])  # heard last: every earlier number is counted
            assert last_heard.wait(DEADLINE), "the listener never caught up"
        assert receiver.missed > 0 and receiver.received + receiver.missed == len(sent)
        assert len(heard) == receiver.received
        assert f"node receiver missed {receiver.missed} event(s) from node sender" in caplog.text
        assert "pruned before it read them" in caplog.text
    finally:
        sender.close()
        receiver.close()
