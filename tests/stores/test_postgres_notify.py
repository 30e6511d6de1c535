"""PostgreSQL lease waiters wake on LISTEN/NOTIFY, across real processes.

The waiter's backstop poll (``lock_poll``) is set far beyond its
``lock_timeout``: it can only get the session in time if the holder's
release wakes it through NOTIFY, so success is the proof, with no clock
reading in the test.
"""

from __future__ import annotations

import json
import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

import psycopg  # noqa: E402

from shoal import LockTimeout, SessionManager  # noqa: E402
from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import Store  # noqa: E402
from tests.servers import PostgresServer  # noqa: E402

ctx = multiprocessing.get_context("spawn")
WAITER_LOCK_TIMEOUT = 60.0
NO_POLL = 3600.0  # the backstop poll, far beyond the waiter's lock_timeout


class CountingStore:
    """A real store, with a count of how often its caller had to wait."""

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.url = store.url
        self.waits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def wait_unlocked(self, key: Any, timeout: float) -> None:
        self.waits += 1
        self.inner.wait_unlocked(key, timeout)


def waiter(url: str, app_id: str, sid: str, out: str) -> None:
    """Open the session serialized (it is held by the test), report what it saw."""
    store = CountingStore(open_store(url))
    manager = SessionManager(
        store,
        app_id=app_id, policy="serialized", node_id="waiter",
        lock_timeout=WAITER_LOCK_TIMEOUT, lock_lease=600,
    )
    try:
        with manager.open(sid) as session:
            result: dict[str, Any] = {"seen": session.get("by"), "waits": store.waits}
            session["by"] = "waiter"
    except LockTimeout:
        result = {"seen": "LockTimeout", "waits": store.waits}
    finally:
        store.inner.close()
    Path(out).write_text(json.dumps(result))


@pytest.fixture
def url(postgres_server: PostgresServer) -> Iterator[str]:
    table = f"n_{uuid.uuid4().hex[:10]}"
    yield f"{postgres_server.url}?table={table}&lock_poll={NO_POLL}"
    with psycopg.connect(postgres_server.url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def listeners(server_url: str, table: str) -> int:
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "{table}_wake"',),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_release_wakes_the_waiter_in_another_process(
    url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    app_id = f"w{uuid.uuid4().hex[:8]}"
    table = url.split("table=")[1].split("&")[0]
    holder = SessionManager(url, app_id=app_id, policy="serialized", node_id="holder",
                            lock_lease=600)
    try:
        with holder.open() as first:
            first["by"] = "creator"
        sid = first.id
        out = tmp_path / "waiter.json"
        with holder.open(sid) as held:
            proc = ctx.Process(target=waiter, args=(url, app_id, sid, str(out)))
            proc.start()
            # The waiter is listening once its LISTEN shows on the server;
            # bounded by the waiter's own lock_timeout.
            for _ in range(600):
                if listeners(postgres_server.url, table) or not proc.is_alive():
                    break
                proc.join(0.1)
            held["by"] = "holder"
        proc.join(WAITER_LOCK_TIMEOUT + 30)
        assert proc.exitcode == 0
        result = json.loads(out.read_text())
        assert result["seen"] == "holder", "woken by the release, it read the holder's save"
        assert result["waits"] >= 1, "the waiter did wait for the holder"
        with holder.open(sid) as session:
            assert session["by"] == "waiter"
    finally:
        holder.close()
