"""Events between separate OS processes, each with its own node id, on SQLite, Redis, PostgreSQL.

Node "a" is this test process; "b" and "c" are ``_node.py`` processes that
only share the store with it. Each event a raises is heard exactly once by
each other node; an ended session's files are deleted by a listener on
another node, also when the session ends by purge (expiry).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import ManualClock, SessionManager
from shoal.ids import hash_id, session_ref
from tests.conftest import STORE_KINDS

from ._nodes import listening_nodes

KINDS = ["sqlite", "redis", "redis-cluster", "postgresql"]


@pytest.fixture(params=[*KINDS, "redis-sentinel"])
def cluster_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return STORE_KINDS[request.param](request, tmp_path)


def test_an_event_raised_on_one_node_is_heard_once_on_each_other(
    cluster_url: str, app_id: str
) -> None:
    with listening_nodes(cluster_url, app_id, ["b", "c"]) as nodes:
        a = SessionManager(cluster_url, app_id=app_id, node_id="a", events=True)
        try:
            with a.open() as session:
                session["user"] = "ann"
            ref = session_ref(hash_id(session.id))
            with a.open(session.id) as again:
                again.rotate()
            with a.open(again.id) as last:
                last.invalidate()
            last_ref = session_ref(hash_id(again.id))
            # A last event after the others: once it is heard, every earlier
            # one has been delivered (each channel keeps a sender's order).
            with a.open() as marker:
                marker["end"] = True
            marker_ref = session_ref(hash_id(marker.id))
            for node in nodes:
                node.wait_for(
                    lambda line: line.get("heard", {}).get("ref") == marker_ref
                )
                assert len(node.heard("created", ref)) == 1
                assert len(node.heard("rotated", ref)) == 1
                assert len(node.heard("invalidated", last_ref)) == 1
                heard = node.heard("created", ref)[0]
                assert heard["node_id"] == "a" and heard["app_id"] == app_id
                assert session.id not in str(node.lines)  # never a raw id
        finally:
            a.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_listener_on_another_node_deletes_the_files_of_a_purged_session(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, app_id: str, clock: ManualClock
) -> None:
    url = STORE_KINDS[kind](request, tmp_path)
    files = [tmp_path / "upload-1.bin", tmp_path / "upload-2.bin"]
    for f in files:
        f.write_bytes(b"x")
    with listening_nodes(url, app_id, ["b"]) as (b,):
        a = SessionManager(
            url, app_id=app_id, node_id="a", events=True, clock=clock, idle_timeout=60, grace=10,
            touch_interval=30,
        )
        try:
            with a.open() as session:
                session["files"] = [str(f) for f in files]
            clock.advance(60 + 10 + 1)
            assert a.purge() == 1
            b.wait_for(lambda line: line.get("deleted") == str(files[-1]), timeout=20)
            assert not any(f.exists() for f in files)
            assert [h["node_id"] for h in b.heard("expired")] == ["a"]
        finally:
            a.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_listener_deletes_the_files_of_a_session_logged_out_on_another_node(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, app_id: str
) -> None:
    url = STORE_KINDS[kind](request, tmp_path)
    upload = tmp_path / "avatar.png"
    upload.write_bytes(b"png")
    with listening_nodes(url, app_id, ["b"]) as (b,):
        a = SessionManager(url, app_id=app_id, node_id="a", events=True)
        try:
            with a.open() as session:
                session["files"] = [str(upload)]
            with a.open(session.id) as again:
                again.invalidate()
            b.wait_for(lambda line: line.get("deleted") == str(upload), timeout=20)
            assert not upload.exists()
        finally:
            a.close()
