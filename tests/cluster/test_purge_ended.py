"""``purge_ended``: the same deletes as ``purge``, returning what each record held."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import ManualClock, SessionManager
from shoal.cluster import Event
from shoal.stores import open_store
from shoal.stores.base import NewRecord, RecordKey
from tests.conftest import STORE_KINDS

KINDS = ["memory", "sqlite", "redis", "redis-cluster", "postgresql", "mysql"]


@pytest.mark.parametrize("kind", KINDS)
def test_purge_ended_returns_the_deleted_records(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, app_id: str
) -> None:
    store = open_store(STORE_KINDS[kind](request, tmp_path))
    now = 1_000_000.0
    try:
        live = RecordKey(app_id, "a" * 64)
        ended = RecordKey(app_id, "b" * 64)
        kept = RecordKey(app_id, "c" * 64)
        for key, expires in ((live, now + 10), (ended, now + 10), (kept, now + 1000)):
            record = NewRecord(
                created=now, expires=expires, absolute_expires=now + 20,
                fields={"files": b"x", "n": b"1"},
            )  # fmt: skip
            assert store.create(key, record, now=now)
        assert store.invalidate(ended, now=now)  # a tombstone until now + 20
        purge_ended = getattr(store, "purge_ended")
        assert purge_ended(now=now + 10.5, grace=1, limit=10) == []  # within grace: nothing
        # live: expires + grace passed; the tombstone: its absolute end + grace passed
        got = purge_ended(now=now + 25, grace=1, limit=10)
        by_key = {e.key: e for e in got}
        assert set(by_key) == {live, ended}
        assert by_key[live].fields == {"files": b"x", "n": b"1"} and not by_key[live].invalidated
        assert by_key[ended].invalidated
        assert purge_ended(now=now + 25, grace=1, limit=10) == []  # deleted for good
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["mysql", "postgresql"])
def test_a_listener_gets_the_values_of_a_session_purged_on_a_server_store(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, app_id: str
) -> None:
    """MySQL has no events channel, but its purge still reads what it deletes:
    a listener of the purging process gets ``expired`` with the values."""
    clock = ManualClock(start=1_000_000.0)
    manager = SessionManager(
        STORE_KINDS[kind](request, tmp_path), app_id=app_id, clock=clock,
        idle_timeout=60, absolute_timeout=65, touch_interval=30, grace=10,
    )  # fmt: skip
    ended: list[Event] = []
    manager.add_listener(ended.append, ["expired"], values=True)
    try:
        with manager.open() as session:
            session["files"] = ["/tmp/report.pdf"]
        with manager.open() as other:
            other["x"] = 1
        with manager.open(other.id) as logout:
            logout.invalidate()  # a tombstone: purged, announced at logout already
        clock.advance(65 + 10 + 1)
        assert manager.purge() == 2
        assert [(e.event, e.values) for e in ended] == [
            ("expired", {"files": ["/tmp/report.pdf"]})
        ]
    finally:
        manager.close()
