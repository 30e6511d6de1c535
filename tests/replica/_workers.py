"""Code run in child processes (multiprocessing 'spawn') by the once-only token tests.

Each child coordinates with the test only through the store and a start
event; its results go to a JSON file the test reads after ``join``. Every
wait is bounded.
"""

from __future__ import annotations

import json
import os
from multiprocessing.synchronize import Event

from shoal import SessionManager


def consume_all(
    url: str, app_id: str, session_id: str, tokens: dict[str, str], start: Event, out: str
) -> None:
    """Try to consume each policy's token once, with that policy; record what happened."""
    manager = SessionManager(
        url, app_id=app_id, node_id=f"worker-{os.getpid()}", lock_timeout=60, lock_lease=60
    )
    start.wait(60)
    results: dict[str, bool] = {}
    for policy, token in sorted(tokens.items()):
        with manager.open(session_id, policy=policy) as session:
            results[policy] = session.consume_token("buy", token)
    manager.close()
    temp = f"{out}.{os.getpid()}.tmp"
    with open(temp, "w") as handle:
        json.dump(results, handle)
    os.replace(temp, out)
