"""A ``unix://`` Redis URL reaches a real server on its socket, sync and async.

Found by review: the shared connection options always asked for TCP
keepalive, which redis-py's Unix-socket connection refuses at the first
command (a TypeError, not even a StoreUnavailable): the scheme was accepted
by the URL parser and never worked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from shoal import SessionManager  # noqa: E402
from shoal.stores import open_async_store, open_store  # noqa: E402
from shoal.stores.base import NewRecord, RecordKey  # noqa: E402
from tests.servers.availability import redis_unavailable, skip_or_fail  # noqa: E402
from tests.servers.redis_server import RedisServer  # noqa: E402

NOW = 1_700_000_000.0
KEY = RecordKey("unix", "ef" * 32)


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private redis-server that also listens on a Unix socket; its path."""
    reason = redis_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    path = tmp_path_factory.mktemp("redis-unix") / "redis.sock"
    server = RedisServer(extra_args=["--unixsocket", str(path), "--unixsocketperm", "700"])
    try:
        server.start()
        yield path
    finally:
        server.cleanup()


def test_the_sync_store_works_over_a_unix_socket(socket_path: Path) -> None:
    store = open_store(f"unix://{socket_path}?db=3")
    try:
        assert store.create(KEY, NewRecord(NOW, NOW + 600, NOW + 3600, {"a": b"j1"}), now=NOW)
        loaded = store.load(KEY, now=NOW + 1)
        assert loaded.record is not None and loaded.record.fields == {"a": b"j1"}
    finally:
        store.close()


def test_the_async_store_works_over_a_unix_socket(socket_path: Path) -> None:
    async def scenario() -> dict[str, bytes] | None:
        store = open_async_store(f"unix://{socket_path}?db=4")
        try:
            await store.create(KEY, NewRecord(NOW, NOW + 600, NOW + 3600, {"b": b"j2"}), now=NOW)
            loaded = await store.load(KEY, now=NOW + 1)
            return None if loaded.record is None else dict(loaded.record.fields)
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == {"b": b"j2"}


def test_a_manager_keeps_sessions_over_a_unix_socket(socket_path: Path) -> None:
    manager = SessionManager(f"unix://{socket_path}?db=5")
    try:
        with manager.open() as session:
            session["user"] = "ada"
        with manager.open(session.id) as again:
            assert again["user"] == "ada"
    finally:
        manager.close()
