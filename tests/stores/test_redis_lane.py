"""The Redis stores' lanes: redis-py connections used directly keep the pool's guarantees.

What ``execute_command`` and the pool did for every command, the lane must
still do where it matters: reconnect a connection the server closed, never
reuse one a failed (or, under asyncio, cancelled) command left out of step,
never share sockets across a fork, and give its idle connections back when
the pool itself is needed. The sync store's ``Lane`` first, then the async
store's ``AsyncLane``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: E402

from shoal.stores._redis_alane import AsyncLane  # noqa: E402
from shoal.stores._redis_lane import Lane  # noqa: E402
from shoal.stores.base import Change, NewRecord, RecordKey  # noqa: E402
from shoal.stores.redis import RedisStore  # noqa: E402
from shoal.stores.redis_async import AsyncRedisStore  # noqa: E402

NOW = 1_700_000_000.0
KEY = RecordKey("lane", "ab" * 32)
AKEY = RecordKey("alane", "cd" * 32)


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


# -- the async store's lane ----------------------------------------------------


def _alane(store: AsyncRedisStore) -> AsyncLane:
    lane = store._clients.get().lane
    assert lane is not None
    return lane


def test_async_the_session_commands_go_through_the_lane(url: str, admin: redis.Redis) -> None:
    async def scenario() -> list[Any]:
        store = AsyncRedisStore.from_url(url)
        try:
            await store.create(AKEY, NewRecord(NOW, NOW + 600, NOW + 3600, {"a": b"j1"}), now=NOW)
            loaded = await store.load(AKEY, now=NOW + 1)
            applied = await store.apply(AKEY, Change(600, set={"b": b"j2"}), now=NOW + 2)
            return [loaded.record is not None, applied.version, len(_alane(store)._idle)]
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == [True, 2, 1]  # one connection, reused for each


async def _until_closed_is_seen(conn: Any) -> None:
    """Let the loop run until it has read the server's close on ``conn`` (at most 5 s).

    asyncio learns of a closed socket only when the loop turns: a request
    that follows a server-side close in the same loop turn, with no await
    between, would fail through redis-py's own client as well.
    """
    deadline = asyncio.get_running_loop().time() + 5
    while asyncio.get_running_loop().time() < deadline:
        try:
            await conn.can_read()
        except (ConnectionError, redis.exceptions.ConnectionError):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the loop never saw the server close the connection")


def test_async_a_connection_the_server_closed_is_reconnected_before_a_save(
    url: str, admin: redis.Redis
) -> None:
    async def scenario() -> tuple[Any, Any, int | None]:
        store = AsyncRedisStore.from_url(url)
        try:
            await store.create(AKEY, NewRecord(NOW, NOW + 600, NOW + 3600, {"a": b"j1"}), now=NOW)
            before = await _alane(store).call("CLIENT", "ID")
            admin.client_kill_filter(_id=before)  # as a server timeout or restart would
            await _until_closed_is_seen(_alane(store)._idle[-1])
            # A save is not retried (not idempotent): it must go out on a live socket.
            result = await store.apply(AKEY, Change(600, set={"b": b"j2"}), now=NOW + 1)
            return before, await _alane(store).call("CLIENT", "ID"), result.version
        finally:
            await store.aclose()

    before, after, version = asyncio.run(scenario())
    assert version == 2
    assert after != before


def test_async_a_command_that_failed_leaves_no_reply_for_the_next(url: str, admin: redis.Redis) -> None:
    async def scenario() -> list[Any]:
        client = redis.asyncio.Redis.from_url(url, socket_timeout=0.2)
        lane = AsyncLane(client.connection_pool)
        try:
            with pytest.raises(RedisTimeoutError):
                await lane.call("BLPOP", "alane:never", "1")  # its reply comes after the timeout
            admin.rpush("alane:never", "late")  # would be BLPOP's reply on the old socket
            return [await lane.call("PING"), await lane.call("GET", "alane:missing")]
        finally:
            await lane.give_back()
            await client.aclose()

    pong, missing = asyncio.run(scenario())
    assert pong in (b"PONG", True, "PONG")
    assert missing is None


def test_async_a_cancelled_command_leaves_no_reply_for_the_next(url: str, admin: redis.Redis) -> None:
    async def scenario() -> list[Any]:
        client = redis.asyncio.Redis.from_url(url)
        lane = AsyncLane(client.connection_pool)
        try:
            waiting = asyncio.create_task(lane.call("BLPOP", "alane:cancelled", "5"))
            while not client.connection_pool._in_use_connections:  # sent, waiting for the reply
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            admin.rpush("alane:cancelled", "late")  # would be BLPOP's reply on the old socket
            return [await lane.call("GET", "alane:missing"), await lane.call("PING")]
        finally:
            await lane.give_back()
            await client.aclose()

    missing, pong = asyncio.run(scenario())
    assert missing is None
    assert pong in (b"PONG", True, "PONG")


def test_async_pool_users_get_the_lanes_idle_connections_back(url: str, admin: redis.Redis) -> None:
    async def scenario() -> list[Any]:
        store = AsyncRedisStore.from_url(f"{url}?max_connections=1&pool_timeout=0.2")
        try:
            await store.load(AKEY, now=NOW)  # the lane borrows the pool's only connection
            held = len(_alane(store)._idle)
            # SCAN (records) needs the pool itself: it must not wait for the lane.
            listed = await store.records("alane")
            again = await store.load(AKEY, now=NOW)
            return [held, listed, again.record]
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == [1, [], None]
