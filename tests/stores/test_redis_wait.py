"""Lease waiters on Redis wake on the record's pub/sub channel, not by polling.

A waiter runs in its own OS process (spawn) with its own store, as a request
of another worker would; the test frees the lease only once the server shows
the waiter subscribed, and the waiter's timeout is far longer than the test
waits for it, so waking up at all proves the notification arrived.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import Change, LockRequest, NewRecord, RecordKey  # noqa: E402
from shoal.stores.redis import RedisStore  # noqa: E402
from tests.conftest import STORE_KINDS  # noqa: E402

WAITER_TIMEOUT = 300.0  # never reached: a waiter that returns was notified
TEST_PATIENCE = 60.0


@pytest.fixture(params=["redis", "redis-cluster", "redis-sentinel"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return STORE_KINDS[request.param](request, tmp_path)


@pytest.fixture
def store(url: str) -> Iterator[RedisStore]:
    opened = open_store(url)
    assert isinstance(opened, RedisStore)
    yield opened
    opened.close()


@pytest.fixture
def key(app_id: str) -> RecordKey:
    return RecordKey(app_id, "d" * 64)


def _wait_in_child(url: str, key: RecordKey, results: Any) -> None:
    store = open_store(url)
    try:
        store.wait_unlocked(key, WAITER_TIMEOUT)
        results.put("woke")
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"error: {exc!r}")
    finally:
        store.close()


def subscribers(store: RedisStore, key: RecordKey) -> int:
    """How many clients the server shows subscribed to the record's channel."""
    channel = f"{store._key(key)}:free"
    client: Any = store._conn()[0]
    if hasattr(client, "get_node_from_key"):
        client = client.get_redis_connection(client.get_node_from_key(channel))
    sharded = store._publish == "SPUBLISH"
    reply = client.execute_command("PUBSUB", "SHARDNUMSUB" if sharded else "NUMSUB", channel)
    return int(reply[1])


def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (bounded): the server handles a closed socket on its own time."""
    deadline = time.monotonic() + TEST_PATIENCE
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def locked(store: RedisStore, key: RecordKey) -> float:
    t = float(int(time.time()))
    store.create(
        key,
        NewRecord(created=t, expires=t + 600, absolute_expires=t + 6000, fields={"n": b"0"}),
        now=t,
        lock=LockRequest("holder", 600.0),
    )
    return t


FREE: dict[str, Callable[[RedisStore, RecordKey, float], object]] = {
    "unlock": lambda s, k, t: s.unlock(k, "holder"),
    "release": lambda s, k, t: s.apply(
        k, Change(600.0, set={"n": b"1"}, lease_token="holder", release=True), now=t + 1
    ),
    "invalidate": lambda s, k, t: s.invalidate(k, now=t + 1),
    "delete": lambda s, k, t: s.delete(k),
}


@pytest.mark.parametrize("how", sorted(FREE))
def test_a_waiter_in_another_process_wakes_when_the_lease_is_freed(
    store: RedisStore, url: str, key: RecordKey, how: str
) -> None:
    t = locked(store, key)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    waiter = ctx.Process(target=_wait_in_child, args=(url, key, results))
    waiter.start()
    try:
        eventually(
            lambda: subscribers(store, key) >= 1 or not waiter.is_alive(),
            "the waiter never subscribed",
        )
        assert waiter.is_alive(), "the waiter died before subscribing"
        FREE[how](store, key, t)
        assert results.get(timeout=TEST_PATIENCE) == "woke"
    finally:
        waiter.join(TEST_PATIENCE)
        if waiter.is_alive():
            waiter.kill()
            waiter.join()
    assert waiter.exitcode == 0


def test_a_lease_freed_before_the_wait_is_not_waited_out(
    store: RedisStore, key: RecordKey
) -> None:
    # The caller saw LOCKED, then the holder unlocked before wait_unlocked
    # subscribed: the message is gone, so the wait must look at the lease again.
    locked(store, key)
    store.unlock(key, "holder")
    done: queue.Queue[str] = queue.Queue()

    def wait() -> None:
        store.wait_unlocked(key, WAITER_TIMEOUT)
        done.put("returned")

    thread = threading.Thread(target=wait)
    thread.start()
    assert done.get(timeout=TEST_PATIENCE) == "returned"
    thread.join()


def test_a_wait_ends_at_its_timeout_while_the_lease_is_held(
    store: RedisStore, key: RecordKey
) -> None:
    locked(store, key)
    store.wait_unlocked(key, 0.05)  # returns (the caller re-tries its load)
    store.wait_unlocked(key, 0.0)
    eventually(lambda: subscribers(store, key) == 0, "a subscription outlived its wait")
