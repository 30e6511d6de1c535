"""The async Redis store's lane: redis.asyncio connections used directly keep the pool's guarantees.

The async twin of test_redis_lane.py: a connection the server closed is
reconnected before use, one a failed (or cancelled) command left out of
step is never reused, and pool users (SCAN, pub/sub) get the lane's idle
connections back instead of waiting for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from redis.exceptions import TimeoutError as RedisTimeoutError  # noqa: E402

from shoal.stores._redis_alane import AsyncLane  # noqa: E402
from shoal.stores.base import Change, NewRecord, RecordKey  # noqa: E402
from shoal.stores.redis_async import AsyncRedisStore  # noqa: E402

NOW = 1_700_000_000.0
KEY = RecordKey("alane", "cd" * 32)


@pytest.fixture
def url(redis_server: Any) -> str:
    return f"redis://127.0.0.1:{redis_server.port}/12"


@pytest.fixture
def admin(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.close()


def _lane(store: AsyncRedisStore) -> AsyncLane:
    lane = store._clients.get().lane
    assert lane is not None
    return lane


def test_the_session_commands_go_through_the_lane(url: str, admin: redis.Redis) -> None:
    async def scenario() -> list[Any]:
        store = AsyncRedisStore.from_url(url)
        try:
            await store.create(KEY, NewRecord(NOW, NOW + 600, NOW + 3600, {"a": b"j1"}), now=NOW)
            loaded = await store.load(KEY, now=NOW + 1)
            applied = await store.apply(KEY, Change(600, set={"b": b"j2"}), now=NOW + 2)
            return [loaded.record is not None, applied.version, len(_lane(store)._idle)]
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


def test_a_connection_the_server_closed_is_reconnected_before_a_save(
    url: str, admin: redis.Redis
) -> None:
    async def scenario() -> tuple[Any, Any, int | None]:
        store = AsyncRedisStore.from_url(url)
        try:
            await store.create(KEY, NewRecord(NOW, NOW + 600, NOW + 3600, {"a": b"j1"}), now=NOW)
            before = await _lane(store).call("CLIENT", "ID")
            admin.client_kill_filter(_id=before)  # as a server timeout or restart would
            await _until_closed_is_seen(_lane(store)._idle[-1])
            # A save is not retried (not idempotent): it must go out on a live socket.
            result = await store.apply(KEY, Change(600, set={"b": b"j2"}), now=NOW + 1)
            return before, await _lane(store).call("CLIENT", "ID"), result.version
        finally:
            await store.aclose()

    before, after, version = asyncio.run(scenario())
    assert version == 2
    assert after != before


def test_a_command_that_failed_leaves_no_reply_for_the_next(url: str, admin: redis.Redis) -> None:
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


def test_a_cancelled_command_leaves_no_reply_for_the_next(url: str, admin: redis.Redis) -> None:
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


def test_pool_users_get_the_lanes_idle_connections_back(url: str, admin: redis.Redis) -> None:
    async def scenario() -> list[Any]:
        store = AsyncRedisStore.from_url(f"{url}?max_connections=1&pool_timeout=0.2")
        try:
            await store.load(KEY, now=NOW)  # the lane borrows the pool's only connection
            held = len(_lane(store)._idle)
            # SCAN (records) needs the pool itself: it must not wait for the lane.
            listed = await store.records("alane")
            again = await store.load(KEY, now=NOW)
            return [held, listed, again.record]
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == [1, [], None]
