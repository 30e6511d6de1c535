"""The native async stores on real servers: faults, the loop, the breaker, lease waits.

- Redis killed: an awaited call ends in ``StoreUnavailable`` (the cause
  chained); restarted on the same port, the same store object serves again
  by itself.
- Redis SIGSTOPped during an awaited ``load``: a loop-lag probe on the same
  loop keeps waking on time and another coroutine keeps running, which a
  loop blocked by the call could not do. As in
  tests/adapters/test_asgi_loop_lag.py, no speed threshold: the worst lag is
  compared with the stall it would be if the loop were blocked (ratio), and
  the functional proof (the other coroutine's progress) needs no clock.
- A lease waiter is woken by the unlock's notification (the one the sync
  store publishes too), awaited.
- One breaker per URL for the sync and the async store of a process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from shoal.errors import StoreUnavailable  # noqa: E402
from shoal.stores import open_async_store, open_store  # noqa: E402
from shoal.stores._breaker import AsyncBreakerStore, BreakerStore  # noqa: E402
from shoal.stores._threaded import ThreadedStore  # noqa: E402
from shoal.stores.base import LoadStatus, LockRequest, NewRecord, RecordKey  # noqa: E402
from shoal.stores.redis_async import AsyncRedisStore  # noqa: E402
from tests.servers import RedisServer  # noqa: E402
from tests.faults._stream import private_server  # noqa: E402
from tests.servers.availability import redis_unavailable  # noqa: E402

STALL = 2.0  # seconds Redis stays stopped, at least
WORST_RATIO = 4  # the worst probe lag stays under STALL / WORST_RATIO
PATIENCE = 30.0  # bound of every wait


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: killing or stopping it disturbs no other test."""
    with private_server(redis_unavailable, RedisServer) as server:
        yield server


def record(now: float) -> NewRecord:
    return NewRecord(created=now, expires=now + 100, absolute_expires=now + 1000)


def test_open_async_store_is_native_for_redis_and_threaded_elsewhere(tmp_path: object) -> None:
    opened = open_async_store("redis://127.0.0.1:1/0?breaker=off")
    assert isinstance(opened, AsyncRedisStore)
    gated = open_async_store("redis://127.0.0.1:1/0")
    assert isinstance(gated, AsyncBreakerStore) and isinstance(gated.store, AsyncRedisStore)
    assert isinstance(open_async_store("memory://"), ThreadedStore)


@pytest.mark.xfail(strict=True, reason="the native async PostgreSQL store is not written yet")
def test_open_async_store_is_native_for_postgresql() -> None:
    opened = open_async_store("postgresql://u@127.0.0.1:1/db?breaker=off")
    assert not isinstance(opened, ThreadedStore)


def test_sync_and_async_stores_of_a_url_share_one_breaker() -> None:
    url = "redis://127.0.0.1:1/0?breaker_threshold=7"
    sync_store = open_store(url)
    async_store = open_async_store(url)
    assert isinstance(sync_store, BreakerStore) or type(sync_store).__name__ == "BreakerStore"
    assert isinstance(async_store, AsyncBreakerStore)
    assert getattr(sync_store, "breaker") is async_store.breaker
    sync_store.close()


def test_killed_redis_gives_store_unavailable_then_recovers(
    private_redis: RedisServer, app_id: str
) -> None:
    url = f"{private_redis.url}?breaker=off&socket_timeout=2&socket_connect_timeout=1"
    key = RecordKey(app_id, "k" * 64)
    now = float(int(time.time()))

    async def scenario() -> tuple[StoreUnavailable, LoadStatus]:
        store = open_async_store(url)
        try:
            assert await store.create(key, record(now), now=now)
            private_redis.kill()
            with pytest.raises(StoreUnavailable) as down:
                await store.load(key, now=now)
            assert down.value.__cause__ is not None, "the redis error is chained"
            private_redis.start()  # same port, empty (no persistence)
            assert await store.create(key, record(now), now=now), "serves again by itself"
            return down.value, (await store.load(key, now=now)).status
        finally:
            await store.aclose()

    error, status = asyncio.run(scenario())
    assert "ConnectionError" in str(error) or "Connection" in str(error.__cause__)
    assert status is LoadStatus.LOADED


def test_sigstopped_redis_leaves_the_loop_free(private_redis: RedisServer, app_id: str) -> None:
    # The socket timeout is far longer than the stall: the load waits for SIGCONT.
    url = f"{private_redis.url}?breaker=off&socket_timeout=20"
    key = RecordKey(app_id, "s" * 64)
    now = float(int(time.time()))
    pid = private_redis.pid
    assert pid is not None

    async def scenario() -> tuple[list[float], int, float, LoadStatus]:
        store = open_async_store(url)
        lags: list[float] = []
        ticks = 0
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(max(0.0, time.perf_counter() - before - 0.001))

        async def other() -> None:  # another coroutine with work of its own
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        try:
            assert await store.create(key, record(now), now=now)
            os.kill(pid, signal.SIGSTOP)
            started = time.perf_counter()
            tasks = [asyncio.create_task(probe()), asyncio.create_task(other())]
            stalled = asyncio.create_task(store.load(key, now=now))
            done, _ = await asyncio.wait({stalled}, timeout=STALL)
            assert not done, "the load ended while Redis was stopped"
            seen = ticks
            assert seen > 100, "other coroutines ran while the load waited"
            os.kill(pid, signal.SIGCONT)
            result = await asyncio.wait_for(stalled, PATIENCE)
            stalled_for = time.perf_counter() - started
            stop.set()
            await asyncio.gather(*tasks)
            return lags, seen, stalled_for, result.status
        finally:
            os.kill(pid, signal.SIGCONT)
            await store.aclose()

    lags, ticks, stalled_for, status = asyncio.run(scenario())
    print(
        f"\nasync redis SIGSTOP: stalled {stalled_for:.2f} s; probe worst lag "
        f"{max(lags) * 1000:.2f} ms, median {statistics.median(lags) * 1000:.3f} ms over "
        f"{len(lags)} wake-ups; other coroutine ran {ticks} steps"
    )
    assert status is LoadStatus.LOADED
    assert stalled_for >= STALL
    assert max(lags) < STALL / WORST_RATIO, "the loop was blocked during the stalled call"


def test_a_lease_waiter_is_woken_by_the_unlock(private_redis: RedisServer, app_id: str) -> None:
    url = f"{private_redis.url}?breaker=off"
    key = RecordKey(app_id, "w" * 64)
    now = float(int(time.time()))

    async def scenario() -> tuple[bool, LoadStatus]:
        store = open_async_store(url)
        try:
            await store.create(key, record(now), now=now, lock=LockRequest("holder", 60.0))
            blocked = await store.load(key, now=now, lock=LockRequest("waiter", 60.0))
            assert blocked.status is LoadStatus.LOCKED
            waiting = asyncio.create_task(store.wait_unlocked(key, PATIENCE))
            # Held: the waiter does not return (an unlock before it subscribed is
            # caught by its re-check of the lease, so this is no race).
            early, _ = await asyncio.wait({waiting}, timeout=0.2)
            assert not early, "the waiter returned while the lease was held"
            await store.unlock(key, "holder")
            await asyncio.wait_for(waiting, PATIENCE)
            woken = waiting.done()
            return woken, (await store.load(key, now=now, lock=LockRequest("waiter", 60))).status
        finally:
            await store.aclose()

    woken, status = asyncio.run(scenario())
    assert woken and status is LoadStatus.LOADED


def test_one_store_awaited_from_two_loops(private_redis: RedisServer, app_id: str) -> None:
    """Each running loop gets a client of its own (redis.asyncio binds to one loop)."""
    store = open_async_store(f"{private_redis.url}?breaker=off")
    key = RecordKey(app_id, "l" * 64)
    now = float(int(time.time()))

    async def create() -> bool:
        try:
            return await store.create(key, record(now), now=now)
        finally:
            await store.aclose()  # this loop's client

    async def load() -> LoadStatus:
        try:
            return (await store.load(key, now=now)).status
        finally:
            await store.aclose()

    assert asyncio.run(create())
    assert asyncio.run(load()) is LoadStatus.LOADED


def test_async_failures_open_the_breaker_the_sync_store_shares(app_id: str) -> None:
    # Nothing listens on port 1: refused at once. The client name makes the
    # URL (and so its process-wide breaker) this test's own.
    url = f"redis://127.0.0.1:1/0?breaker_threshold=2&breaker_slow=60&client_name={app_id}"
    async_store = open_async_store(url)
    sync_store = open_store(url)
    key = RecordKey(app_id, "b" * 64)
    assert isinstance(async_store, AsyncBreakerStore)

    async def fail_twice() -> None:
        try:
            for _ in range(2):
                with pytest.raises(StoreUnavailable) as refused:
                    await async_store.load(key, now=0.0)
                assert "circuit open" not in str(refused.value)
        finally:
            await async_store.aclose()

    try:
        asyncio.run(fail_twice())
        with pytest.raises(StoreUnavailable, match="circuit open"):
            sync_store.load(key, now=0.0)  # failed fast: the async calls opened it
    finally:
        async_store.breaker.reset()
        sync_store.close()
