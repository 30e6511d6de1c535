"""A node with a near cache for the cluster process tests.

``python -m tests.cluster._cache_node URL APP NODE``: its own manager
(``events=True``, a near cache whose ``max_age`` is far longer than any
test, so only an event can drop an entry) on a store that counts its calls.
It prints ``{"ready": node}`` once its listener thread runs, a ``heard``
line for each event it receives, and answers each JSON command on stdin:

``{"open": sid}``: a ``read_only`` open; replies ``{"opened": sid, "new":
..., "values": ..., "calls": store calls it made, "hits": cache hits so far}``.

It exits when stdin closes (or after ``DEADLINE`` seconds).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from shoal import SessionManager
from shoal.cluster import Event, NearCache
from shoal.stores import open_store
from tests._counting import CountingStore

DEADLINE = 120.0
MAX_AGE = 3600.0  # entries never go stale by age during a test


def main(url: str, app_id: str, node_id: str) -> None:
    store = CountingStore(open_store(url))
    manager = SessionManager(
        store,  # a counting proxy of a real store
        app_id=app_id, node_id=node_id, events=True,
        near_cache=NearCache(size=100, max_age=MAX_AGE),
    )  # fmt: skip
    out = threading.Lock()

    def say(data: dict[str, Any]) -> None:
        with out:
            sys.stdout.write(json.dumps(data) + "\n")
            sys.stdout.flush()

    def heard(event: Event) -> None:
        say({"heard": event.as_dict(), "local": event.local})

    manager.add_listener(heard)
    say({"ready": node_id})
    cache = manager.near_cache
    assert cache is not None, "the store has no events channel: no near cache"
    deadline = time.monotonic() + DEADLINE
    for line in sys.stdin:  # ends when the test closes stdin
        if time.monotonic() > deadline:
            break
        command = json.loads(line)
        sid = command["open"]
        before = len(store.calls)
        with manager.open(sid, read_only=True) as session:
            values = {key: session[key] for key in session}
        say({
            "opened": sid, "new": session.is_new, "values": values,
            "calls": len(store.calls) - before, "hits": cache.stats.hits,
        })  # fmt: skip
    manager.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
