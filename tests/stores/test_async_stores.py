"""The native async stores on real servers: faults, the loop, the breaker, lease waits.

- Redis (and PostgreSQL) killed: an awaited call ends in
  ``StoreUnavailable`` (the cause chained); restarted on the same port, the
  same store object serves again by itself.
- Redis SIGSTOPped during an awaited ``load``: a loop-lag probe on the same
  loop keeps waking on time and another coroutine keeps running, which a
  loop blocked by the call could not do. As in
  tests/adapters/test_asgi_loop_lag.py, no speed threshold: the worst lag is
  compared with the stall it would be if the loop were blocked (ratio), and
  the functional proof (the other coroutine's progress) needs no clock.
- A lease waiter is woken by the unlock's notification (the one the sync
  store publishes too), awaited.
- One breaker per URL for the sync and the async store of a process.
- PostgreSQL (``AsyncPostgresStore``), the same faults: killed, then
  restarted; every process of it SIGSTOPped during an awaited ``load``,
  which the store's cut-off must end with ``StoreUnavailable`` (libpq has
  no read timeout) while the loop stays free; a lease waiter woken by
  NOTIFY; one store awaited from two loops, one after the other and at
  once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from shoal.errors import StoreUnavailable  # noqa: E402
from shoal.stores import open_async_store, open_store  # noqa: E402
from shoal.stores._breaker import AsyncBreakerStore, BreakerStore  # noqa: E402
from shoal.stores._threaded import ThreadedStore  # noqa: E402
from shoal.stores.base import LoadStatus, LockRequest, NewRecord, RecordInfo, RecordKey  # noqa: E402
from shoal.stores.redis_async import AsyncRedisStore  # noqa: E402
from tests.conftest import STORE_KINDS  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402
from tests.faults._stream import private_server  # noqa: E402
from tests.servers.availability import postgres_unavailable, redis_unavailable  # noqa: E402

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


class LoopProbe:
    """A loop-lag probe and a coroutine with work of its own, on the running loop.

    ``lags``: how late each 1 ms sleep of the probe woke; ``ticks``: how many
    steps the other coroutine made. A call that blocked the loop would show
    as one lag as long as the call, and as no ticks while it lasted.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.woke: list[float] = []  # when each lag ended (perf_counter)
        self.ticks = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> LoopProbe:
        self._tasks = [asyncio.create_task(self._probe()), asyncio.create_task(self._other())]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _probe(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            woke = time.perf_counter()
            self.lags.append(max(0.0, woke - before - 0.001))
            self.woke.append(woke)

    async def _other(self) -> None:
        while not self._stop.is_set():
            self.ticks += 1
            await asyncio.sleep(0)

    def report(self, what: str, stalled_for: float) -> str:
        worst = max(range(len(self.lags)), key=self.lags.__getitem__)
        return (
            f"\n{what}: stalled {stalled_for:.2f} s; probe worst lag "
            f"{self.lags[worst] * 1000:.2f} ms ({self.woke[worst] - self.woke[0]:.2f} s in), "
            f"median {statistics.median(self.lags) * 1000:.3f} ms over {len(self.lags)} "
            f"wake-ups; other coroutine ran {self.ticks} steps"
        )


def test_open_async_store_is_native_for_redis_and_threaded_elsewhere(tmp_path: object) -> None:
    opened = open_async_store("redis://127.0.0.1:1/0?breaker=off")
    assert isinstance(opened, AsyncRedisStore)
    gated = open_async_store("redis://127.0.0.1:1/0")
    assert isinstance(gated, AsyncBreakerStore) and isinstance(gated.store, AsyncRedisStore)
    assert isinstance(open_async_store("memory://"), ThreadedStore)


def test_open_async_store_is_native_for_postgresql() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from shoal.stores.postgresql_async import AsyncPostgresStore

    opened = open_async_store("postgresql://u@127.0.0.1:1/db?breaker=off&max_size=3")
    assert isinstance(opened, AsyncPostgresStore) and opened.max_size == 3
    gated = open_async_store("postgresql://u@127.0.0.1:1/db")
    assert isinstance(gated, AsyncBreakerStore) and isinstance(gated.store, AsyncPostgresStore)


def test_sync_and_async_stores_of_a_url_share_one_breaker() -> None:
    url = "redis://127.0.0.1:1/0?breaker_threshold=7"
    sync_store = open_store(url)
    async_store = open_async_store(url)
    assert isinstance(sync_store, BreakerStore) or type(sync_store).__name__ == "BreakerStore"
    assert isinstance(async_store, AsyncBreakerStore)
    assert getattr(sync_store, "breaker") is async_store.breaker
    sync_store.close()


def test_sigstopped_redis_leaves_the_loop_free(private_redis: RedisServer, app_id: str) -> None:
    # The socket timeout is far longer than the stall: the load waits for SIGCONT.
    url = f"{private_redis.url}?breaker=off&socket_timeout=20"
    key = RecordKey(app_id, "s" * 64)
    now = float(int(time.time()))
    pid = private_redis.pid
    assert pid is not None

    async def scenario() -> tuple[LoopProbe, int, float, LoadStatus]:
        store = open_async_store(url)
        try:
            assert await store.create(key, record(now), now=now)
            os.kill(pid, signal.SIGSTOP)
            started = time.perf_counter()
            async with LoopProbe() as probe:
                stalled = asyncio.create_task(store.load(key, now=now))
                done, _ = await asyncio.wait({stalled}, timeout=STALL)
                assert not done, "the load ended while Redis was stopped"
                seen = probe.ticks
                assert seen > 100, "other coroutines ran while the load waited"
                os.kill(pid, signal.SIGCONT)
                result = await asyncio.wait_for(stalled, PATIENCE)
                stalled_for = time.perf_counter() - started
            return probe, seen, stalled_for, result.status
        finally:
            os.kill(pid, signal.SIGCONT)
            await store.aclose()

    probe, ticks, stalled_for, status = asyncio.run(scenario())
    print(probe.report("async redis SIGSTOP", stalled_for))
    assert status is LoadStatus.LOADED
    assert stalled_for >= STALL
    assert max(probe.lags) < STALL / WORST_RATIO, "the loop was blocked during the stalled call"


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


# -- PostgreSQL ------------------------------------------------------------------

# Short store timeouts: the cut-off of a frozen server is max(socket_timeout,
# statement_timeout + 1) = 2 s.
PG_TIMEOUTS = "breaker=off&connect_timeout=2&statement_timeout=1&pool_timeout=2&socket_timeout=2"
PG_CUT_AFTER = 2.0


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own (killed and stopped here), commits synchronous."""
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    with private_server(postgres_unavailable, PostgresServer) as server:
        with psycopg.connect(server.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("ALTER DATABASE postgres SET synchronous_commit = on")
        yield server


def private_pg_url(server: PostgresServer) -> str:
    return f"{server.url}?table=a_{uuid.uuid4().hex[:8]}&{PG_TIMEOUTS}"


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh table on the shared PostgreSQL, no breaker."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    return f"{STORE_KINDS['postgresql'](request, tmp_path)}&breaker=off"


# kind -> (its private server's fixture, that server's store URL with short timeouts)
KILLABLE: dict[str, tuple[str, Callable[[Any], str]]] = {
    "redis": (
        "private_redis",
        lambda server: f"{server.url}?breaker=off&socket_timeout=2&socket_connect_timeout=1",
    ),
    "postgresql": ("private_postgres", private_pg_url),
}


@pytest.mark.parametrize("kind", sorted(KILLABLE))
def test_a_killed_server_gives_store_unavailable_then_recovers(
    kind: str, request: pytest.FixtureRequest, app_id: str
) -> None:
    fixture, make_url = KILLABLE[kind]
    server = request.getfixturevalue(fixture)
    url = make_url(server)
    key, later = RecordKey(app_id, "k" * 64), RecordKey(app_id, "K" * 64)
    now = float(int(time.time()))

    async def scenario() -> tuple[StoreUnavailable, LoadStatus]:
        store = open_async_store(url)
        try:
            assert await store.create(key, record(now), now=now)
            server.kill()
            with pytest.raises(StoreUnavailable) as down:
                await store.load(key, now=now)
            assert down.value.__cause__ is not None, "the client's error is chained"
            server.start()  # same port (Redis comes back empty, PostgreSQL with its data)
            assert await store.create(later, record(now), now=now), "serves again by itself"
            return down.value, (await store.load(later, now=now)).status
        finally:
            await store.aclose()

    error, status = asyncio.run(scenario())
    print(f"\nasync {kind} killed: {error}")
    assert "Connection" in str(error) or "connection" in str(error.__cause__)
    assert status is LoadStatus.LOADED


def test_sigstopped_postgres_is_cut_off_and_leaves_the_loop_free(
    private_postgres: PostgresServer, app_id: str
) -> None:
    # Every process of the server stopped: the kernel keeps its sockets open
    # and nothing answers, which only the store's cut-off ends.
    from tests.faults.test_postgres_faults import all_processes

    url = private_pg_url(private_postgres)
    key = RecordKey(app_id, "s" * 64)
    now = float(int(time.time()))

    async def scenario() -> tuple[LoopProbe, StoreUnavailable, float, LoadStatus]:
        store = open_async_store(url)
        stopped: list[int] = []
        try:
            assert await store.create(key, record(now), now=now)
            stopped = all_processes(private_postgres)
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            started = time.perf_counter()
            async with LoopProbe() as probe:
                with pytest.raises(StoreUnavailable) as cut:
                    # PATIENCE only bounds the test: a hang fails it as a TimeoutError.
                    await asyncio.wait_for(store.load(key, now=now), PATIENCE)
                stalled_for = time.perf_counter() - started
            assert probe.ticks > 100, "other coroutines ran while the load waited"
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            # The same store serves again once the server is back.
            status = (await asyncio.wait_for(store.load(key, now=now), PATIENCE)).status
            return probe, cut.value, stalled_for, status
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            await store.aclose()

    probe, error, stalled_for, status = asyncio.run(scenario())
    print(probe.report("async postgresql SIGSTOP", stalled_for))
    # Ended by the cut-off (not by some other error, and not a hang):
    assert f"no answer within {PG_CUT_AFTER:g}s (socket_timeout)" in str(error)
    assert stalled_for >= PG_CUT_AFTER
    assert max(probe.lags) < PG_CUT_AFTER / WORST_RATIO, "the loop was blocked by the call"
    assert status is LoadStatus.LOADED


def test_a_postgres_lease_waiter_is_woken_by_the_unlocks_notify(pg_url: str, app_id: str) -> None:
    key = RecordKey(app_id, "w" * 64)
    now = float(int(time.time()))

    async def scenario() -> LoadStatus:
        store = open_async_store(pg_url)
        try:
            await store.create(key, record(now), now=now, lock=LockRequest("holder", 60.0))
            # The first wait starts the listener and may return before it is up
            # (a spurious wake the contract allows): the waiter then loads again,
            # as a manager does, and that load's mark makes its wait a real one.
            for _ in range(100):
                blocked = await store.load(key, now=now, lock=LockRequest("waiter", 60.0))
                assert blocked.status is LoadStatus.LOCKED
                waiting = asyncio.create_task(store.wait_unlocked(key, PATIENCE))
                early, _ = await asyncio.wait({waiting}, timeout=0.2)
                if not early:
                    break
            assert not early, "the waiter returned while the lease was held"
            await store.unlock(key, "holder")  # its NOTIFY wakes the waiter
            await asyncio.wait_for(waiting, PATIENCE)
            return (await store.load(key, now=now, lock=LockRequest("waiter", 60))).status
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) is LoadStatus.LOADED


def test_one_postgres_store_awaited_from_two_loops(pg_url: str, app_id: str) -> None:
    """Each running loop gets a pool of its own: one loop after another, and two at once."""
    store = open_async_store(pg_url)
    now = float(int(time.time()))

    async def create_then_load(name: str, count: int) -> list[LoadStatus]:
        keys = [RecordKey(app_id, f"{name}{i:063d}") for i in range(count)]
        for k in keys:
            assert await store.create(k, record(now), now=now)
        return [(await store.load(k, now=now)).status for k in keys]

    async def closing(name: str, count: int) -> list[LoadStatus]:
        try:
            return await create_then_load(name, count)
        finally:
            await store.aclose()  # this loop's pool

    assert asyncio.run(closing("a", 1)) == [LoadStatus.LOADED]
    assert asyncio.run(closing("b", 1)) == [LoadStatus.LOADED]

    # Two loops at once, in two threads, neither closing until both are done.
    both_done = threading.Barrier(2, timeout=PATIENCE)
    results: dict[str, list[LoadStatus]] = {}

    async def at_once(name: str) -> None:
        results[name] = await create_then_load(name, 20)
        await asyncio.get_running_loop().run_in_executor(None, both_done.wait)
        await store.aclose()

    threads = [threading.Thread(target=asyncio.run, args=(at_once(n),)) for n in "cd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    assert results == {n: [LoadStatus.LOADED] * 20 for n in "cd"}


def test_a_dropped_table_is_created_again_by_the_async_store(pg_url: str, app_id: str) -> None:
    """As the sync store: a statement that meets no table re-creates it once and runs again."""
    import psycopg
    from urllib.parse import parse_qs, urlsplit

    table = parse_qs(urlsplit(pg_url).query)["table"][0]
    key = RecordKey(app_id, "d" * 64)
    now = float(int(time.time()))

    def drop() -> None:
        with psycopg.connect(pg_url.split("?")[0], autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP TABLE "{table}"')

    async def scenario() -> tuple[list[RecordInfo], int, LoadStatus]:
        store = open_async_store(pg_url)
        try:
            assert await store.create(key, record(now), now=now)
            drop()
            listed = list(await store.records(app_id))
            drop()
            purged = await store.purge(now=now, grace=0.0)
            drop()
            assert await store.create(key, record(now), now=now)
            return listed, purged, (await store.load(key, now=now)).status
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == ([], 0, LoadStatus.LOADED)


def test_the_async_table_creation_outlasts_a_statements_cut_off(
    pg_url: str, app_id: str
) -> None:
    """The DDL waits under ``schema_timeout``, not the 2 s cut-off of a statement.

    Another session holds the store's migration lock for longer than the
    cut-off (socket_timeout=2, statement_timeout=0.3): the store's first
    call waits for it and then creates the table.
    """
    import psycopg
    from urllib.parse import parse_qs, urlsplit

    from shoal.stores.postgresql import _Statements

    table = parse_qs(urlsplit(pg_url).query)["table"][0]
    key = RecordKey(app_id, "m" * 64)
    now = float(int(time.time()))

    async def first_call() -> LoadStatus:
        store = open_async_store(f"{pg_url}&statement_timeout=0.3&socket_timeout=2")
        try:
            return (await store.load(key, now=now)).status
        finally:
            await store.aclose()

    with psycopg.connect(pg_url.split("?")[0], connect_timeout=5) as blocker:
        blocker.execute(_Statements(table).migrate_lock)  # held until the rollback
        release = threading.Timer(PG_CUT_AFTER + 0.5, blocker.rollback)
        release.start()
        try:
            assert asyncio.run(first_call()) is LoadStatus.ABSENT
        finally:
            release.cancel()
            release.join()
