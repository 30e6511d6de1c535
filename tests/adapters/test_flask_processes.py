"""One Flask session shared by the workers of a real gunicorn, under load."""

from __future__ import annotations

from pathlib import Path

from ._increments import check_increments
from ._serve import SERVERS, server_env

CLIENTS = 8
INCREMENTS = 100


def test_concurrent_increments_across_two_workers_are_all_kept(tmp_path: Path) -> None:
    env = server_env(f"sqlite://{tmp_path / 'sessions.db'}")
    with SERVERS["flask"](env) as port:
        final, cookie = check_increments(port, clients=CLIENTS, increments=INCREMENTS)
    assert cookie.startswith("session=")
    assert len(final["pids"]) == 2, f"served by {final['pids']}"
