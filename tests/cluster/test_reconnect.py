"""The listener thread reconnects by itself after the store restarts, and counts what it missed."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from shoal import SessionManager
from shoal.cluster import Event
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
