"""Under ``merge``, concurrent writes to different keys of one session all survive, across processes.

Per framework, its counting app (tests/adapters/*_app.py) runs under a
real server with two worker processes (gunicorn for Flask and Django,
uvicorn for Starlette and FastAPI) on a private SQLite file. 8 concurrent
clients share one session; each increments a key of its own 100 times.
``merge`` takes no lock: each save writes only the key its request
changed onto the newest record (compare-and-set, retried), so every key
must end at exactly 100, and each client must have seen its key go 1, 2,
..., 100 (each request reads the newest record).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._increments import check_per_key_increments
from ._serve import SERVERS, WORKERS, server_env

CLIENTS = 8
INCREMENTS = 100


@pytest.mark.parametrize("framework", sorted(SERVERS))
def test_per_key_increments_under_merge_are_exact_per_key(
    framework: str, tmp_path: Path
) -> None:
    env = server_env(f"sqlite://{tmp_path / 'sessions.db'}", SHOAL_POLICY="merge")
    with SERVERS[framework](env) as port:
        session, pids = check_per_key_increments(port, clients=CLIENTS, increments=INCREMENTS)
    assert len(session) == CLIENTS + 1, sorted(session)
    assert len(pids) == WORKERS, f"served by {sorted(pids)}"
