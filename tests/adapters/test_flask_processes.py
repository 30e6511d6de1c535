"""One Flask session shared by the workers of a real gunicorn, under load."""

from __future__ import annotations

import os
from pathlib import Path

from ..processes._servers import running_gunicorn
from ._increments import check_increments

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 8
INCREMENTS = 100


def test_concurrent_increments_across_two_workers_are_all_kept(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_STORE": f"sqlite://{tmp_path / 'sessions.db'}",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with running_gunicorn(
        "tests.adapters.flask_gunicorn_app:app", cwd=ROOT, env=env, workers=2
    ) as port:
        final, cookie = check_increments(port, clients=CLIENTS, increments=INCREMENTS)
    assert cookie.startswith("session=")
    assert len(final["pids"]) == 2, f"served by {final['pids']}"
