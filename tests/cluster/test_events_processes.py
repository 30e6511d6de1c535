"""Events between separate OS processes, each with its own node id, on SQLite, Redis, PostgreSQL.

Node "a" is this test process; "b" and "c" are ``_node.py`` processes that
only share the store with it. Each event a raises is heard exactly once by
each other node; an ended session's files are deleted by a listener on
another node, also when the session ends by purge (expiry).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shoal import ManualClock, SessionManager
from shoal.cluster import Event
from shoal.ids import hash_id, session_ref
from tests.conftest import STORE_KINDS

from ._nodes import ROOT, listening_nodes

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


@pytest.mark.parametrize("kind", KINDS)
def test_shoal_purge_from_cron_announces_expired_to_the_app_nodes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, app_id: str
) -> None:
    """``shoal purge`` (its own process and node) announces each ended session once,
    with its values: the app node's file-deleting listener removes its files."""
    url = STORE_KINDS[kind](request, tmp_path)
    files = [tmp_path / "report.pdf", tmp_path / "photo.jpg"]
    for f in files:
        f.write_bytes(b"x")
    # Written 1000 s ago with a 60 s idle timeout: long expired for the real clock
    # the CLI reads (native TTLs are relative, so Redis keeps it meanwhile).
    writer = SessionManager(
        url, app_id=app_id, clock=ManualClock(start=time.time() - 1000),
        idle_timeout=60, touch_interval=30, absolute_timeout=120,
    )
    try:
        with writer.open() as session:
            session["files"] = [str(f) for f in files]
        with writer.open() as other:
            other["files"] = []
        with writer.open() as gone:  # logged out earlier: purged, not announced again
            gone["files"] = []
        with writer.open(gone.id) as again:
            again.invalidate()
    finally:
        writer.close()
    ref = session_ref(hash_id(session.id))
    with listening_nodes(url, app_id, ["b"]) as (b,):
        purged = subprocess.run(
            [sys.executable, "-m", "shoal.cli", "--store", url, "purge", "--grace", "10",
             "--node-id", "cron", "--json"],
            capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT, check=False,
        )  # fmt: skip
        assert purged.returncode == 0, purged.stderr
        result = json.loads(purged.stdout)
        assert result["purged"] == 3 and result["announced"] == 2
        b.wait_for(lambda line: line.get("deleted") == str(files[-1]), timeout=20)
        assert not any(f.exists() for f in files)
        other_ref = session_ref(hash_id(other.id))
        b.wait_for(lambda line: line.get("heard", {}).get("ref") == other_ref, timeout=20)
        expired = b.heard("expired")
        assert sorted(h["ref"] for h in expired) == sorted([ref, other_ref])
        assert {h["node_id"] for h in expired} == {"cron"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_listener_that_raises_fails_neither_the_request_nor_the_other_listeners(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, app_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A raising listener on the sending node and one on the receiving node (its
    listener thread): both requests commit, b's other listeners still hear each
    event once and delete the file, and each failure is logged naming the node
    it happened on and the session only by its ref."""
    url = STORE_KINDS[kind](request, tmp_path)
    upload = tmp_path / "avatar.png"
    upload.write_bytes(b"png")
    with listening_nodes(url, app_id, ["b"], "tests.cluster._node", "broken") as (b,):
        a = SessionManager(url, app_id=app_id, node_id="a", events=True)

        def broken(event: Event) -> None:
            raise ValueError("a bug in a's listener")

        a.add_listener(broken)
        try:
            with caplog.at_level(logging.ERROR, logger="shoal.cluster"):
                with a.open() as session:
                    session["files"] = [str(upload)]
                with a.open(session.id) as again:
                    assert again["files"] == [str(upload)]  # the first request committed
                    again.invalidate()
            ref = session_ref(hash_id(session.id))
            b.wait_for(lambda line: line.get("deleted") == str(upload), timeout=20)
            assert not upload.exists()
            assert [len(b.heard(e, ref)) for e in ("created", "invalidated")] == [1, 1]
            logged = [line["logged"] for line in b.lines if "logged" in line]
            assert len(logged) == 2, logged
            for message in logged:
                assert message.startswith("node b: ") and "broken" in message
                assert ref in message and "from node a" in message
            mine = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
            assert len(mine) == 2 and all(m.startswith("node a: ") for m in mine), mine
            assert session.id not in str(b.lines) + caplog.text  # refs only, never the id
        finally:
            a.close()


def _env() -> dict[str, str]:
    """The environment of a subprocess that must import this tree's shoal."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


@pytest.mark.parametrize("kind", KINDS)
def test_logout_everywhere_ends_what_another_process_serves_from_its_near_cache(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, app_id: str
) -> None:
    """Node b (own process, near cache) serves ann's sessions with no store call;
    ``invalidate_all`` here ends them there on b's very next open: no stale hit,
    though b's entries would stay fresh by age for an hour."""
    url = STORE_KINDS[kind](request, tmp_path)
    a = SessionManager(url, app_id=app_id, node_id="a", events=True, near_cache=100)
    try:
        sids = []
        for device in ("laptop", "phone"):
            with a.open() as session:
                session["device"] = device
                session.principal = "ann"
            sids.append(session.id)
        with listening_nodes(url, app_id, ["b"], "tests.cluster._cache_node") as (b,):
            for sid in sids:
                first = b.ask({"open": sid}, "opened")
                assert not first["new"] and first["calls"] >= 1  # from the store, now cached
                hit = b.ask({"open": sid}, "opened")
                assert hit["values"] == first["values"] and hit["calls"] == 0  # a hit: no call
            hits = hit["hits"]
            assert hits == 2
            assert a.invalidate_all("ann") == 2
            refs = [session_ref(hash_id(sid)) for sid in sids]
            for ref in refs:  # delivered: the entry was dropped before the listener ran

                def ended(line: dict[str, Any], ref: str = ref) -> bool:
                    heard = line.get("heard", {})
                    return bool(heard.get("event") == "invalidated" and heard["ref"] == ref)

                b.wait_for(ended, timeout=20)
            for sid in sids:
                after = b.ask({"open": sid}, "opened")
                assert after["new"] and "device" not in after["values"]
                assert after["calls"] >= 1 and after["hits"] == hits  # no stale hit
            assert {h["principal"] for h in b.heard("invalidated")} == {"ann"}
    finally:
        a.close()
