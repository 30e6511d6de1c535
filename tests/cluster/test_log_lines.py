"""shoal's log lines about sessions name the node they happened on, and sessions only by ref.

Issue 12: the node id is carried in lock tokens, events *and log lines*, so
an operator reading the merged logs of a cluster knows which process served
a session from its replica, restored it, or ended a user's oldest session.
"""

from __future__ import annotations

import logging

import pytest
from werkzeug.test import Client

from shoal import ManualClock, SessionManager
from shoal.stores.memory import MemoryStore
from shoal.wsgi import SessionMiddleware
from tests.replica._apps import NEW_KEY, demo_app, dump


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("shoal")]


def test_a_replica_restore_is_logged_with_the_node_id(
    caplog: pytest.LogCaptureFixture, clock: ManualClock, app_id: str
) -> None:
    store = MemoryStore()
    manager = SessionManager(
        store, app_id=app_id, clock=clock, replica=True, secret_keys=[NEW_KEY], node_id="web-7"
    )
    client = Client(SessionMiddleware(demo_app, manager))
    assert client.get("/set?user=ann").status_code == 200
    sid = client.get_cookie("shoal")
    assert sid is not None
    for info in list(store.records(app_id)):
        store.delete(info.key)  # the store lost it
    with caplog.at_level(logging.INFO, logger="shoal"):
        assert dump(client) == {"user": "ann"}
    restored = [m for m in _messages(caplog) if "restored" in m]
    assert restored and all(m.startswith("node web-7: ") for m in restored), restored
    assert sid.value not in " ".join(_messages(caplog))


def test_ending_a_users_oldest_sessions_is_logged_with_the_node_id(
    caplog: pytest.LogCaptureFixture, app_id: str
) -> None:
    manager = SessionManager(
        MemoryStore(), app_id=app_id, node_id="web-8", max_sessions_per_principal=1
    )
    with caplog.at_level(logging.INFO, logger="shoal"):
        for _ in range(2):
            with manager.open() as session:
                session.principal = "ann"
    ended = [m for m in _messages(caplog) if "max_sessions_per_principal" in m]
    assert ended == ["node web-8: principal over max_sessions_per_principal: ended 1 oldest session(s)"]
