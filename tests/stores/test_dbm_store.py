"""dbm:// beyond the contract suite: URL options, the one lock, keys, purge walk, damage.

The contract itself (tests/contract) and the process tests (test_multiprocess,
tests/processes) run on this store through STORE_KINDS.
"""

from __future__ import annotations

import dbm
import os
import threading
from pathlib import Path

import pytest

from shoal import ConfigError, StoreUnavailable
from shoal.stores import open_store
from shoal.stores._lockfile import Mutex
from shoal.stores.base import ApplyStatus, Change, LoadStatus, NewRecord, RecordKey
from shoal.stores.dbm import DbmStore, decode_key, encode_key

T0 = 1_700_000_000.0
IDLE = 100.0


def new(now: float = T0, **fields: bytes) -> NewRecord:
    return NewRecord(created=now, expires=now + IDLE, absolute_expires=now + 10 * IDLE,
                     fields=fields)


@pytest.fixture
def store(tmp_path: Path) -> DbmStore:
    return DbmStore(str(tmp_path / "sessions.dbm"))


def test_url_options_are_cast_and_checked(tmp_path: Path) -> None:
    url = f"dbm://{tmp_path}/s.dbm?mutex_ttl=3&mutex_timeout=4"
    store = open_store(url)
    assert isinstance(store, DbmStore)
    assert (store.path, store.mutex.ttl, store.mutex.timeout) == (f"{tmp_path}/s.dbm", 3.0, 4.0)
    with pytest.raises(ConfigError, match="valid: mutex_timeout, mutex_ttl"):
        open_store(f"dbm://{tmp_path}/s.dbm?fsync=true")


def test_uses_the_dbm_this_python_has_and_leaves_only_its_files(store: DbmStore) -> None:
    key = RecordKey("app", "a" * 64)
    assert store.records() is not None and list(store.records()) == []
    assert store.load(key, now=T0).status is LoadStatus.ABSENT, "no database yet: nothing"
    assert store.create(key, new(a=b"1"), now=T0)
    kind = dbm.whichdb(store.path)
    assert kind in ("dbm.gnu", "dbm.ndbm", "dbm.dumb")
    assert not os.path.exists(store.lock_path()), "the lock file is gone after each operation"
    leftovers = [n for n in os.listdir(os.path.dirname(store.path)) if n.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("app_id", ["app", "a:b", "a\x00b", "", "ünï"], ids=repr)
def test_keys_round_trip_and_namespaces_stay_apart(store: DbmStore, app_id: str) -> None:
    key = RecordKey(app_id, "b" * 64)
    assert decode_key(encode_key(key)) == key
    store.create(key, new(), now=T0)
    store.create(RecordKey(app_id + "x", "b" * 64), new(), now=T0)
    assert [info.key for info in store.records(app_id)] == [key]


def test_one_lock_guards_every_session(store: DbmStore, tmp_path: Path) -> None:
    """One host, one database, one lock: a holder of it blocks writes to any key."""
    store.create(RecordKey("app", "c" * 64), new(), now=T0)
    held = Mutex(ttl=3600, timeout=1).acquire(store.lock_path())
    try:
        busy = DbmStore(store.path, mutex_timeout=0.2)
        with pytest.raises(StoreUnavailable, match="lock file busy"):
            busy.create(RecordKey("app", "d" * 64), new(), now=T0)
    finally:
        held.release()
    assert store.create(RecordKey("app", "d" * 64), new(), now=T0)


def test_purge_resumes_its_walk_and_wraps_round(store: DbmStore) -> None:
    keys = [RecordKey("app", f"{i:02x}" + "0" * 62) for i in range(0, 200, 20)]
    for key in keys:
        store.create(key, new(), now=T0)
    late = T0 + IDLE + 1
    assert store.purge(now=late, grace=0, limit=4) == 4
    store.create(RecordKey("app", "00" + "1" * 62), new(), now=T0)  # before the cursor
    counts = []
    for _ in range(10):
        counts.append(store.purge(now=late, grace=0, limit=4))
        if counts[-1] < 4:
            break
    assert sum(counts) == len(keys) + 1 - 4
    assert list(store.records()) == []


def test_a_damaged_value_is_loud(store: DbmStore) -> None:
    key = RecordKey("app", "e" * 64)
    store.create(key, new(), now=T0)
    database = store._module().open(store.path, "w", 0o600)
    try:
        database[encode_key(key)] = b"\x01not a record at all"
    finally:
        database.close()
    with pytest.raises(StoreUnavailable, match="damaged record"):
        store.load(key, now=T0)
    assert store.delete(key), "an administrator can remove it"
    assert store.load(key, now=T0).status is LoadStatus.ABSENT


def test_threads_of_one_process_exclude_each_other_through_the_lock_file(
    store: DbmStore,
) -> None:
    key = RecordKey("app", "f" * 64)
    store.create(key, new(), now=T0)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(15):
                change = Change(IDLE, set={f"{name}{i}": b"x"})
                assert store.apply(key, change, now=T0 + 1).status is ApplyStatus.OK
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    record = store.load(key, now=T0 + 2).record
    assert record is not None and len(record.fields) == 45 and record.version == 46
