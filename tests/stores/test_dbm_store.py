"""dbm:// beyond the contract suite and test_local_stores.py.

The dbm kind this Python has and the files it leaves, keys of any app id,
the one lock file every session shares, and a damaged value.
"""

from __future__ import annotations

import dbm
import os
from pathlib import Path

import pytest

from shoal import StoreUnavailable
from shoal.stores._lockfile import Mutex
from shoal.stores.base import LoadStatus, RecordKey
from shoal.stores.dbm import DbmStore, decode_key, encode_key
from tests.stores._records import T0, new


@pytest.fixture
def store(tmp_path: Path) -> DbmStore:
    return DbmStore(str(tmp_path / "sessions.dbm"))


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
