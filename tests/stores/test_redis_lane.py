"""The Redis store's lane: redis-py connections used directly keep the pool's guarantees.

What ``execute_command`` and the pool did for every command, the lane must
still do where it matters: reconnect a connection the server closed, never
reuse one a failed command left out of step, never share sockets across a
fork, and give its idle connections back when the pool itself is needed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis  # noqa: E402
from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: E402

from shoal.stores._redis_lane import Lane  # noqa: E402
from shoal.stores.base import Change, NewRecord, RecordKey  # noqa: E402
from shoal.stores.redis import RedisStore  # noqa: E402

NOW = 1_700_000_000.0
KEY = RecordKey("lane", "ab" * 32)


@pytest.fixture
def url(redis_server: Any) -> str:
    return f"redis://127.0.0.1:{redis_server.port}/11"


@pytest.fixture
def admin(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def store(url: str, admin: redis.Redis) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(url)
    yield opened
    opened.close()


def _lane(store: RedisStore) -> Lane:
    lane = store._conn()[2]
    assert lane is not None
    return lane


def test_a_connection_the_server_closed_is_reconnected_before_a_save(
    store: RedisStore, admin: redis.Redis
) -> None:
    store.create(KEY, NewRecord(NOW, NOW + 600, NOW + 3600, {"a": b"j1"}), now=NOW)
    before = _lane(store).call("CLIENT", "ID")
    admin.client_kill_filter(_id=before)  # as a server timeout or restart would
    # A save is not retried (not idempotent): it must go out on a live socket.
    result = store.apply(KEY, Change(600, set={"b": b"j2"}), now=NOW + 1)
    assert result.version == 2
    assert _lane(store).call("CLIENT", "ID") != before


def test_a_command_that_failed_leaves_no_reply_for_the_next(url: str, admin: redis.Redis) -> None:
    client = redis.Redis.from_url(url, socket_timeout=0.2)
    lane = Lane(client.connection_pool)
    try:
        with pytest.raises(RedisTimeoutError):
            lane.call("BLPOP", "lane:never", "1")  # its reply comes after the timeout
        admin.rpush("lane:never", "late")  # would be BLPOP's reply on the old socket
        assert lane.call("PING") in (b"PONG", True, "PONG")
        assert lane.call("GET", "lane:missing") is None
    finally:
        lane.give_back()
        client.close()


def test_a_forked_child_never_uses_its_parents_connections(store: RedisStore) -> None:
    lane = _lane(store)
    parent = lane.call("CLIENT", "ID")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def child() -> None:
        queue.put(lane.call("CLIENT", "ID"))  # the inherited lane, in the child

    process = context.Process(target=child)
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 0
    assert queue.get(timeout=5) != parent
    assert lane.call("CLIENT", "ID") == parent  # the parent's socket is untouched


def test_pool_users_get_the_lanes_idle_connections_back(url: str) -> None:
    pool: Any = redis.BlockingConnectionPool.from_url(url, max_connections=1, timeout=0.2)
    client = redis.Redis.from_pool(pool)
    store = RedisStore(client, url=url)
    try:
        store.load(KEY, now=NOW)  # the lane borrows the pool's only connection
        assert _lane(store)._idle
        # SCAN (records) needs the pool itself: it must not wait for the lane.
        assert list(store.records("lane")) == []
        assert store.load(KEY, now=NOW).record is None
    finally:
        store.close()


def test_a_pool_with_a_packer_of_its_own_keeps_it(url: str) -> None:
    # The lane packs with hiredis directly, unless the pool names its own
    # packer: then every command goes through that packer, as redis-py would.
    from redis.connection import PythonRespSerializer

    packed: list[tuple[Any, ...]] = []

    class Counting(PythonRespSerializer):
        def pack(self, *args: Any) -> list[bytes]:
            packed.append(args)
            return super().pack(*args)  # type: ignore[no-untyped-call, no-any-return]

    encoder = redis.Redis.from_url(url).get_encoder()
    pool: Any = redis.ConnectionPool.from_url(url, command_packer=Counting(6000, encoder.encode))
    lane = Lane(pool)
    try:
        lane.call("SET", "lane:packed", b"v")
        assert lane.call("GET", "lane:packed") == b"v"
        assert [args[0] for args in packed][-2:] == ["SET", "GET"]  # after the handshake
    finally:
        lane.give_back()
        pool.disconnect()
