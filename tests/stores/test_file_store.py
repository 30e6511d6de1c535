"""file:// beyond the contract suite and test_local_stores.py.

Its own URL options (fsync, no host), the fan-out layout, damaged files,
orphans of killed processes, and an operation that outlives its mutex.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from shoal import ConfigError, StoreUnavailable
from shoal.stores import open_store
from shoal.stores._lockfile import ORPHAN_AGE, Mutex
from shoal.stores.state import StoredRecord
from shoal.stores.base import ApplyStatus, Change, LoadStatus, RecordKey
from shoal.stores.file import FileStore, decode_file, encode_file
from tests.stores._records import IDLE, T0, new


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(str(tmp_path / "sessions"))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "rec",
    [
        StoredRecord(3, T0, T0 + 1, T0 + 2, T0 + 3, {"ünï": b"\x00\xff", "": b""},
                     {"ünï": 3, "": 1}, lease_token="node:1:abc", lease_until=T0 + 30),
        StoredRecord(4, T0, T0, T0 + 9, T0 + 9, invalidated=True),
        StoredRecord(1, T0, T0, T0, T0, lease_token="", lease_until=0.0),
    ],
    ids=["leased", "tombstone", "empty-token"],
)
def test_record_files_round_trip_and_refuse_any_truncation(rec: StoredRecord) -> None:
    key = RecordKey("app", "9" * 64)
    blob = encode_file(key, rec)
    assert decode_file(blob) == (key, rec)
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            decode_file(blob[:cut])


def test_url_options_are_cast_and_checked(tmp_path: Path) -> None:
    """fsync, the URL kept as given, no host (mutex options: test_local_stores.py)."""
    url = f"file://{tmp_path}/s?mutex_ttl=2.5&fsync=off"
    store = open_store(url)
    assert isinstance(store, FileStore)
    assert (store.root, store.mutex.ttl, store.fsync) == (f"{tmp_path}/s", 2.5, False)
    assert store.url == url
    with pytest.raises(ConfigError, match="fsync"):
        open_store(f"file://{tmp_path}/s?fsync=perhaps")
    with pytest.raises(ConfigError, match="no host"):
        open_store("file://server/share")


def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("file:rel/sessions")
    assert isinstance(store, FileStore) and store.root == str(tmp_path / "rel" / "sessions")


def test_one_private_file_per_session_under_a_two_level_fan_out(store: FileStore) -> None:
    key = RecordKey("shop", "ab12" + "0" * 60)
    assert store.create(key, new(a=b"1"), now=T0)
    assert store.apply(key, Change(IDLE, set={"a": b"2"}), now=T0 + 1).status is ApplyStatus.OK
    root = Path(store.root)
    assert files_under(root) == [f"shop/ab/12/{key.id_hash}.rec"], "no lock or temp file stays"
    mode = stat.S_IMODE(os.stat(root / "shop/ab/12" / f"{key.id_hash}.rec").st_mode)
    assert mode & 0o077 == 0, "session files are private to their owner"


@pytest.mark.parametrize(
    "app_id", ["../evil", ".", "..", "", "a/b", "x" * 300, "ünï code", "%41", "~x"], ids=repr
)
def test_any_app_id_and_id_hash_stay_inside_the_root(store: FileStore, app_id: str) -> None:
    keys = [RecordKey(app_id, "f" * 64), RecordKey(app_id, "../../not hex"),
            RecordKey(app_id, "AB")]
    for key in keys:
        assert store.create(key, new(), now=T0)
        assert store.load(key, now=T0).status is LoadStatus.LOADED
    assert sorted(info.key.id_hash for info in store.records(app_id)) == sorted(
        k.id_hash for k in keys
    )
    root = os.path.realpath(store.root)
    for path in Path(store.root).rglob("*"):
        assert os.path.realpath(path).startswith(root + os.sep)


def test_app_ids_that_escape_alike_stay_apart(store: FileStore) -> None:
    """The escaping is injective: ``%41`` is not ``A``, ``.`` is not ``%2E``."""
    ids = ["A", "%41", ".", "%2E", "a-b", "a_b"]
    for app_id in ids:
        store.create(RecordKey(app_id, "e" * 64), new(), now=T0)
    for app_id in ids:
        assert [info.key for info in store.records(app_id)] == [RecordKey(app_id, "e" * 64)]


def test_a_damaged_record_is_loud_on_load_and_skipped_when_listing(
    store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = RecordKey("app", "1" * 64), RecordKey("app", "2" * 64)
    store.create(good, new(), now=T0)
    store.create(bad, new(), now=T0)
    path = store.paths(bad)[1]
    blob = Path(path).read_bytes()
    Path(path).write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(StoreUnavailable, match="damaged record file") as caught:
        store.load(bad, now=T0)
    assert bad.id_hash not in str(caught.value), "only the short session ref is shown"
    with pytest.raises(StoreUnavailable):
        store.apply(bad, Change(IDLE, set={"a": b"1"}), now=T0)
    with caplog.at_level(logging.WARNING, logger="shoal"):
        assert [info.key for info in store.records("app")] == [good]
        assert store.purge(now=T0 + 10 * IDLE, grace=0) == 1
    assert "damaged record file" in caplog.text
    assert store.delete(bad), "an administrator can remove it"
    assert store.load(bad, now=T0).status is LoadStatus.ABSENT


def test_purge_sweeps_what_killed_processes_left(store: FileStore) -> None:
    key = RecordKey("app", "3" * 64)
    store.create(key, new(), now=T0)
    bucket, _, lock = store.paths(key)
    Mutex(ttl=1.0, timeout=1, clock=lambda: 1000.0).acquire(lock)  # its holder died long ago
    old = store.mutex.clock() - ORPHAN_AGE - 1
    for name in (f"{key.id_hash}.rec.dead.tmp", f"{key.id_hash}.lock.dead.tmp",
                 f"{key.id_hash}.lock.break.gone.1"):
        Path(bucket, name).touch()
        os.utime(os.path.join(bucket, name), (old, old))
    os.utime(lock, (old, old))
    assert store.purge(now=T0, grace=0) == 0
    assert sorted(os.listdir(bucket)) == [f"{key.id_hash}.rec"], "the stale lock is broken too"


def test_an_operation_that_outlives_its_mutex_writes_nothing(tmp_path: Path) -> None:
    """With a safe window shorter than any write, every attempt is abandoned."""
    url = f"file://{tmp_path}/s?mutex_ttl=0.000001&mutex_timeout=0.2"
    store = FileStore.from_url(url)
    key = RecordKey("app", "4" * 64)
    with pytest.raises(StoreUnavailable, match="raise mutex_ttl"):
        store.create(key, new(), now=T0)
    assert store.load(key, now=T0).status is LoadStatus.ABSENT
    assert [p for p in files_under(tmp_path / "s") if not p.endswith(".lock")] == []
