"""``shoal copy`` while 4 writer processes keep changing the source: no write is lost.

The source is the embedded SQLite file; the targets are Redis and
PostgreSQL (the move the issue names: an app outgrowing one host). Four
spawned processes each add 1 to their own session ``WRITES`` times while the
copy runs its passes; ``keep_going`` holds the copy open while any writer is
alive, so its last, quiet pass began after the last write. Every count on
the target must then be exactly ``WRITES``, read through a manager as the
application would.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shoal import SessionManager
from shoal.cli._copy import copy_records
from shoal.stores import open_store

from ..conftest import STORE_KINDS
from . import _workers as w

WRITERS = 4
WRITES = 150
IDLE_SESSIONS = 40  # copied once, unchanged afterwards
MAX_PASSES = 100_000  # bound; the writers' own DEADLINE bounds the time


@pytest.mark.parametrize("target_kind", ["redis", "postgresql"])
def test_copy_while_four_writers_run_loses_no_write(
    request: pytest.FixtureRequest, tmp_path: Path, target_kind: str
) -> None:
    source_url = STORE_KINDS["sqlite"](request, tmp_path)
    target_url = STORE_KINDS[target_kind](request, tmp_path)
    app_id = f"c{uuid.uuid4().hex[:12]}"
    manager = SessionManager(source_url, app_id=app_id)
    sids = []
    for i in range(WRITERS + IDLE_SESSIONS):
        with manager.open() as session:
            session["n"] = 0
            session["i"] = i
        sids.append(session.id)
    manager.close()
    crew = w.Crew(threads=False)
    start = crew.barrier(WRITERS + 1)
    source, target = open_store(source_url), open_store(target_url)
    try:
        writers = [
            crew.start(f"writer-{i}", w.increment, source_url, app_id, sids[i], "merge", "n",
                       WRITES, f"node-{i}", start)  # fmt: skip
            for i in range(WRITERS)
        ]
        start.wait(60)
        report = copy_records(
            source, target, app_id=app_id, max_passes=MAX_PASSES,
            keep_going=lambda: any(wk.process.is_alive() for wk in writers),
        )  # fmt: skip
        for writer in writers:
            writer.result()
    finally:
        crew.stop_all()
        source.close()
        target.close()
    assert report.settled and report.passes >= 2, report
    moved = SessionManager(target_url, app_id=app_id)
    try:
        for i, sid in enumerate(sids):
            with moved.open(sid, read_only=True) as session:
                assert not session.is_new, f"session {i} missing on the target"
                expected = WRITES if i < WRITERS else 0
                assert (session["n"], session["i"]) == (expected, i)
    finally:
        moved.close()
