"""file:// and dbm:// alike, beyond the contract suite.

Both keep sessions on the local filesystem behind ``_lockfile`` mutexes and
walk their records to purge: URL options cast by one table, a purge walk that
resumes where it stopped, lock files that keep the threads of one process
apart. What only one of them has is in test_file_store.py / test_dbm_store.py;
the contract (tests/contract) and the process tests (test_multiprocess,
tests/processes) run on both through STORE_KINDS.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal import ConfigError
from shoal.stores import open_store
from shoal.stores.base import ApplyStatus, Change, RecordKey
from shoal.stores.dbm import DbmStore
from shoal.stores.file import FileStore
from tests.stores._records import IDLE, T0, new

LocalStore = FileStore | DbmStore


@dataclass(frozen=True)
class Kind:
    scheme: str
    make: Callable[[str], LocalStore]
    name: str  # of the store at ``tmp_path / name``
    path_attr: str  # the attribute holding the path the store opened
    unknown: str  # a URL parameter this kind refuses
    valid: str  # the valid parameters its error lists


KINDS = {
    "file": Kind("file", FileStore, "sessions", "root", "ttl", "fsync, mutex_timeout, mutex_ttl"),
    "dbm": Kind("dbm", DbmStore, "sessions.dbm", "path", "fsync", "mutex_timeout, mutex_ttl"),
}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest) -> Kind:
    return KINDS[request.param]


@pytest.fixture
def store(kind: Kind, tmp_path: Path) -> LocalStore:
    return kind.make(str(tmp_path / kind.name))


def test_url_options_are_cast_and_checked(kind: Kind, tmp_path: Path) -> None:
    base = f"{kind.scheme}://{tmp_path}/{kind.name}"
    store = open_store(f"{base}?mutex_ttl=2.5&mutex_timeout=7")
    assert isinstance(store, FileStore | DbmStore)
    assert (getattr(store, kind.path_attr), store.mutex.ttl, store.mutex.timeout) == (
        f"{tmp_path}/{kind.name}", 2.5, 7.0
    )
    with pytest.raises(ConfigError, match=f"valid: {kind.valid}$"):
        open_store(f"{base}?{kind.unknown}=1")
    with pytest.raises(ConfigError, match="mutex_ttl"):
        open_store(f"{base}?mutex_ttl=0")


def test_purge_resumes_its_walk_and_wraps_round(store: LocalStore) -> None:
    """A call that returns less than ``limit`` has seen every record, also the ones
    before where the previous call stopped."""
    first = [RecordKey("app", f"{b:02x}" + "0" * 62) for b in range(0, 200, 20)]
    for key in first:
        store.create(key, new(), now=T0)
    late = T0 + IDLE + 1
    assert store.purge(now=late, grace=0, limit=4) == 4  # the walk stopped mid-way
    # A record the walk already passed becomes purgeable.
    early = RecordKey("app", "00" + "1" * 62)
    store.create(early, new(), now=T0)
    counts = []
    for _ in range(10):
        counts.append(store.purge(now=late, grace=0, limit=4))
        if counts[-1] < 4:
            break
    assert sum(counts) == len(first) + 1 - 4
    assert list(store.records()) == []


def test_threads_of_one_process_exclude_each_other_through_the_lock_files(
    store: LocalStore,
) -> None:
    key = RecordKey("app", "5" * 64)
    store.create(key, new(), now=T0)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(25):
                change = Change(IDLE, set={f"{name}{i}": b"x"})
                assert store.apply(key, change, now=T0 + 1).status is ApplyStatus.OK
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    record = store.load(key, now=T0 + 2).record
    assert record is not None and len(record.fields) == 100 and record.version == 101
