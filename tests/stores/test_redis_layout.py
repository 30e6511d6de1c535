"""What the Redis store keeps on the server: one hash per session, one slot, native TTL.

The contract suite checks behaviour; these tests look at the server itself,
on every Redis kind (standalone, Cluster, Sentinel), through the store's own
client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")

from redis.crc import key_slot  # noqa: E402

from shoal.stores import open_store  # noqa: E402
from shoal.stores.base import (  # noqa: E402
    Change,
    LoadStatus,
    LockRequest,
    NewRecord,
    RecordKey,
    Touch,
)
from shoal.stores.redis import RedisStore  # noqa: E402
from tests.conftest import STORE_KINDS  # noqa: E402

IDLE = 100.0
GRACE = 120.0  # the store's default


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
    return RecordKey(app_id, "c" * 64)


def raw(store: RedisStore) -> Any:
    """The store's own redis-py client (Redis or RedisCluster)."""
    return store._conn()[0]


def now() -> float:
    return float(int(time.time()))


def new(t: float, fields: dict[str, bytes] | None = None) -> NewRecord:
    return NewRecord(created=t, expires=t + IDLE, absolute_expires=t + 10 * IDLE, fields=fields or {})


def test_one_hash_per_session_under_one_hash_tag(store: RedisStore, key: RecordKey) -> None:
    t = now()
    assert store.create(key, new(t, {"user": b"ann", "cart": b"[]"}), now=t)
    name = f"shoal:{{{key.app_id}:{key.id_hash}}}"
    client = raw(store)
    assert client.type(name) == b"hash"
    stored = client.hgetall(name)
    assert stored[b"f:user"] == b"ann" and stored[b"v:user"] == b"1"
    assert {b"ver", b"ctd", b"acc", b"exp", b"abs"} <= set(stored)
    # The notification channel hashes to the record's slot (Cluster: one shard).
    assert key_slot(name.encode()) == key_slot(f"{name}:free".encode())


def test_session_keys_never_collide_with_meta_fields(store: RedisStore, key: RecordKey) -> None:
    t = now()
    tricky = {"ver": b"x", "f:a": b"y", "v:a": b"z", "lt": b"tok", "inv": b"1", "exp": b"0"}
    store.create(key, new(t, tricky), now=t)
    store.apply(key, Change(IDLE, set={"abs": b"1"}), now=t + 1)
    loaded = store.load(key, now=t + 2, lock=LockRequest("me", 30.0))
    assert loaded.status is LoadStatus.LOADED and loaded.record is not None
    assert dict(loaded.record.fields) == {**tricky, "abs": b"1"}
    assert loaded.record.version == 2 and loaded.record.expires == t + 1 + IDLE


def test_native_ttl_is_expires_plus_grace(store: RedisStore, key: RecordKey) -> None:
    t = now()
    name = store._key(key)
    client = raw(store)
    store.create(key, new(t), now=t)
    # Relative to the caller's clock: expires + grace - now, counted from the write.
    assert (IDLE + GRACE - 60) * 1000 < client.pttl(name) <= (IDLE + GRACE) * 1000
    store.load(key, now=t + 50, touch=Touch(t + 50 - 10, IDLE))
    assert (IDLE + GRACE - 60) * 1000 < client.pttl(name) <= (IDLE + GRACE) * 1000
    store.invalidate(key, now=t + 60)
    tomb_ttl = 10 * IDLE - 60 + GRACE  # the tombstone lives until absolute expiry + grace
    assert (tomb_ttl - 60) * 1000 < client.pttl(name) <= tomb_ttl * 1000


def test_grace_parameter_sets_the_ttl_margin(url: str, key: RecordKey) -> None:
    joined = "&" if "?" in url else "?"
    store = open_store(f"{url}{joined}grace=5&prefix=g:")
    assert isinstance(store, RedisStore)
    t = now()
    store.create(key, new(t), now=t)
    assert (IDLE + 5 - 60) * 1000 < raw(store).pttl(f"g:{{{key.app_id}:{key.id_hash}}}") <= (
        IDLE + 5
    ) * 1000
    store.close()


def test_redis_drops_expired_records_by_itself(url: str, key: RecordKey) -> None:
    joined = "&" if "?" in url else "?"
    store = open_store(f"{url}{joined}grace=0")
    assert isinstance(store, RedisStore)
    t = time.time()
    store.create(key, NewRecord(created=t, expires=t + 0.2, absolute_expires=t + 10), now=t)
    client, name = raw(store), store._key(key)
    deadline = time.monotonic() + 30  # bounded wait for the server's own expiry
    while client.exists(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.exists(name)
    store.close()


def test_times_round_trip_exactly(store: RedisStore, key: RecordKey) -> None:
    # Doubles Lua's default %.14g would round: every digit must survive.
    t = now() + 0.123456789012345
    idle = 1 / 3
    store.create(key, NewRecord(created=t, expires=t + 10 * idle, absolute_expires=t + 7.7), now=t)
    later = t + 2.000000000000001
    loaded = store.load(key, now=later, touch=Touch(later, idle))
    assert loaded.record is not None
    assert loaded.record.accessed == later and loaded.record.created == t
    assert loaded.record.expires == min(later + idle, t + 7.7)
    saved = store.apply(key, Change(0.1 + 0.2, set={"k": b"v"}), now=later)
    assert saved.version == 2
    record = store.load(key, now=later).record
    assert record is not None and record.expires == min(later + (0.1 + 0.2), t + 7.7)
    locked = store.load(key, now=later, lock=LockRequest("a", idle))
    assert locked.status is LoadStatus.LOADED
    refused = store.load(key, now=later, lock=LockRequest("b", 1.0))
    assert refused.locked_until == later + idle


def test_scripts_are_reloaded_after_script_flush(store: RedisStore, key: RecordKey) -> None:
    t = now()
    store.create(key, new(t), now=t)
    client = raw(store)
    if hasattr(client, "get_primaries"):
        for node in client.get_primaries():
            client.get_redis_connection(node).script_flush()
    else:
        client.script_flush()
    assert store.load(key, now=t).status is LoadStatus.LOADED
    assert store.apply(key, Change(IDLE, set={"a": b"1"}), now=t).version == 2


def test_prefixes_keep_stores_apart(url: str, key: RecordKey) -> None:
    joined = "&" if "?" in url else "?"
    one, two = open_store(f"{url}{joined}prefix=one:"), open_store(f"{url}{joined}prefix=two:")
    t = now()
    assert one.create(key, new(t), now=t)
    assert two.load(key, now=t).status is LoadStatus.ABSENT
    assert [info.key for info in one.records(key.app_id)] == [key]
    assert list(two.records(key.app_id)) == []
    assert two.purge(now=t + 10_000, grace=0) == 0 and one.load(key, now=t).record is not None
    one.close()
    two.close()


def test_records_and_purge_skip_foreign_keys(store: RedisStore, key: RecordKey) -> None:
    t = now()
    client = raw(store)
    foreign = f"shoal:{{{key.app_id}:not-a-hash}}"
    client.set(foreign, b"someone else's string")
    store.create(key, new(t), now=t)
    assert [info.key for info in store.records(key.app_id)] == [key]
    assert store.purge(now=t + 100_000, grace=0) == 1
    assert client.get(foreign) == b"someone else's string"


def test_a_save_of_thousands_of_keys_spans_unpack_steps(store: RedisStore, key: RecordKey) -> None:
    # APPLY writes every key in one HSET, deletes in one HDEL and reads
    # expectations in one HMGET, in steps of 4000 arguments (Lua's unpack()
    # limit): 2500 keys make each of them take more than one step.
    t = now()
    many = {f"k{i}": str(i).encode() for i in range(2500)}
    store.create(key, new(t), now=t)
    assert store.apply(key, Change(IDLE, set=many), now=t).version == 2
    seen: dict[str, int | None] = {name: 2 for name in many}
    half = sorted(many)[:1250]
    saved = store.apply(key, Change(IDLE, delete=frozenset(half), expect_fields=seen), now=t)
    assert saved.version == 3
    record = store.load(key, now=t).record
    assert record is not None
    assert dict(record.fields) == {name: many[name] for name in sorted(many)[1250:]}
    stale = store.apply(key, Change(IDLE, set={"x": b"1"}, expect_fields=seen), now=t)
    assert stale.conflicts == tuple(sorted(half))
    kept = sorted(many)[-1]
    replaced = store.apply(key, Change(IDLE, set={kept: many[kept]}, replace=True), now=t)
    assert replaced.version == 4
    record = store.load(key, now=t).record
    assert record is not None and dict(record.fields) == {kept: many[kept]}
    assert record.field_versions == {kept: 2}  # unchanged by the whole-record write
